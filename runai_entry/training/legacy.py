"""Every name and module path of 0.1.0 and 0.2 that moved or retired: it still works for one
release, and warns (``DeprecationWarning``, once per name) naming what to use instead.

Three kinds, all here so that removing them in 0.4 is one deletion:

* 0.1.0's lower-layer names on the package face (``from runai_entry.training import prune``):
  they stay public in their own modules (:data:`FACADE_NAMES`);
* module paths that moved (``runai_entry.training.tensorfile`` is now the private
  ``runai_entry.training._io.tensorfile``): an import hook (:class:`MovedModules`) hands out the
  module where it lives now (:data:`MOVED_MODULES`);
* ``runai_entry.training.torch``, which shared its name with the package it imports: what a
  resume needs to continue exactly went to :mod:`.continuity`; its four ways to agree on a stop
  (``all_agree``, ``DistributedStop``, ``any_rank``, ``agree_to_stop``) give way to the one the
  Checkpointer uses, :func:`.dist.agree`; one-file saves (``save_training_state``,
  ``load_training_state``, ``TrainingState``) give way to the Checkpointer, which also loads
  those files. The old path imports this module; the retired functions are defined here.

Standard library only at import (the package imports this module to install the hook): torch
is imported by the functions that need it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import importlib.abc

    import torch

    from runai_entry.training._io.oldfile import TrainingState
    from runai_entry.training.stop import StopFlag

#: The release that drops what this module keeps alive.
REMOVAL = "0.4"

_PACKAGE = "runai_entry.training"

#: 0.1.0 exported these from the package face too; they live on in these modules.
FACADE_NAMES = {
    "parse_signal": "stop",
    "stop_signal_from_env": "stop",
    "stop_timeout_from_env": "stop",
    "atomic_open": "atomic",
    "atomic_write_bytes": "atomic",
    "prune": "atomic",
    "PruneResult": "atomic",
    "clean_stale_temps": "atomic",
    "is_temp_name": "atomic",
    "Periodic": "schedule",
}

#: Old module path -> the module it is now.
MOVED_MODULES = {
    **{f"{_PACKAGE}.{name}": f"{_PACKAGE}._io.{name}"
       for name in ("tensorfile", "dcpio", "writer", "diskio", "staging", "fence", "replicated",
                    "backends", "budget")},
    f"{_PACKAGE}.interval": "runai_entry.core.interval",
    f"{_PACKAGE}.torch": __name__,
}

#: What the warning for an old module path advises, when there is more to say than its new home.
_ADVICE = {
    f"{_PACKAGE}.dcpio": f"RawReader (to load DCP checkpoints) is public in {_PACKAGE}.dcp",
    f"{_PACKAGE}.tensorfile": "the format is safetensors' layout: read it with the safetensors "
                              "library, or restore it with Checkpointer",
    f"{_PACKAGE}.torch": f"ResumableSampler, rng_state, set_rng_state and unwrap are in "
                         f"{_PACKAGE}.continuity; rank and agree in {_PACKAGE}.dist; "
                         "save_training_state, load_training_state, TrainingState, "
                         "DistributedStop, any_rank, all_agree and agree_to_stop retire (use "
                         f"Checkpointer and {_PACKAGE}.dist.agree)",
}

#: What ``runai_entry.training.torch`` held that moved on: name -> its module now.
TORCH_NAMES = {
    "ResumableSampler": f"{_PACKAGE}.continuity",
    "rng_state": f"{_PACKAGE}.continuity",
    "set_rng_state": f"{_PACKAGE}.continuity",
    "unwrap": f"{_PACKAGE}.continuity",
    "rank": f"{_PACKAGE}.dist",
    "FORMAT": f"{_PACKAGE}._io.tensorfile",
    "TrainingState": f"{_PACKAGE}._io.oldfile",  # what load_training_state returns
}

_warned: set[str] = set()


def deprecated(old: str, instead: str, *, stacklevel: int = 1) -> None:
    """Warn once per process that ``old`` goes in :data:`REMOVAL`; ``instead``: what to use.
    ``stacklevel`` as for :func:`warnings.warn`, counted from the caller of this function."""
    if old in _warned:
        return
    _warned.add(old)
    warnings.warn(f"{old} is deprecated and goes in {REMOVAL}: {instead}", DeprecationWarning,
                  stacklevel=stacklevel + 1)


def facade_name(name: str) -> Any:
    """A 0.1.0 name asked of the package face (its ``__getattr__``): warn, resolve."""
    module = FACADE_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {_PACKAGE!r} has no attribute {name!r}")
    # 3: this function's caller is the package's __getattr__, whose caller is the user.
    deprecated(f"{_PACKAGE}.{name}", f"import it from {_PACKAGE}.{module}", stacklevel=3)
    return getattr(importlib.import_module(f"{_PACKAGE}.{module}"), name)


def __getattr__(name: str) -> Any:
    """The names ``runai_entry.training.torch`` held that moved on (that path imports this)."""
    module = TORCH_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


class MovedModules:
    """The import hook for :data:`MOVED_MODULES`: importing an old path warns once and yields
    the module where it lives now (the very module object: its classes stay one class).

    Appended to ``sys.meta_path``, after the finders of real files: it is asked only for a
    name no file provides. The loader replaces its own fresh module in ``sys.modules`` with the
    target, which the import system then returns (its documented replacement case).
    """

    def find_spec(self, fullname: str, path: object = None, target: object = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, cast("importlib.abc.Loader", self))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module; exec_module swaps it for the target

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__
        new = MOVED_MODULES[old]
        advice = _ADVICE.get(old)
        where = "" if new == __name__ else f"it is {new} now, which is private"
        # 2: the frames of the import system between here and the import statement are skipped.
        deprecated(old, "; ".join(part for part in (where, advice) if part), stacklevel=2)
        sys.modules[old] = importlib.import_module(new)


def install() -> None:
    """Add the import hook once (the package may be imported again after a reload)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())


# -- what runai_entry.training.torch held that retires --------------------------------------------


def all_agree(value: bool, *, any_rank: bool) -> bool:
    """True if any (``any_rank=True``) or every rank passed True; one all_reduce of one int."""
    deprecated("all_agree", f"{_PACKAGE}.dist.agree(value)[0] (true on every rank if true on "
               "any); for 'every rank': not agree(not value)[0]", stacklevel=2)
    return _all_agree(value, any_rank=any_rank)


def _all_agree(value: bool, *, any_rank: bool) -> bool:
    from runai_entry.training.dist import agree

    if any_rank:
        return agree(value)[0]
    return not agree(not value)[0]


def any_rank(value: bool) -> bool:
    """True on every rank when ``value`` is True on any rank (one all_reduce of one int)."""
    deprecated("any_rank", f"{_PACKAGE}.dist.agree(value)[0], or the Checkpointer, which agrees "
               "on its time-based saves by itself", stacklevel=2)
    return _all_agree(value, any_rank=True)


def agree_to_stop(flag: StopFlag) -> bool:
    """True on every rank if any rank's flag is set."""
    deprecated("agree_to_stop", f"{_PACKAGE}.dist.agree(flag.should_stop())[0], or the "
               "Checkpointer, which agrees on the stop by itself", stacklevel=2)
    return _all_agree(flag.should_stop(), any_rank=True)


class DistributedStop:
    """Every rank stops at the same step when any one of them received the stop signal: every
    ``every`` calls one all_reduce; once agreed, True without further collectives. Between
    checks False, so that no rank leaves while the others still expect it."""

    def __init__(self, flag: StopFlag, every: int = 1) -> None:
        deprecated("DistributedStop", "Checkpointer(agree_every=N), which agrees on the stop "
                   f"by itself, or {_PACKAGE}.dist.agree(flag.should_stop())[0] every N steps",
                   stacklevel=2)
        if every < 1:
            raise ValueError(f"every must be >= 1, not {every}")
        self.flag = flag
        self.every = every
        self._calls = 0
        self._agreed = False

    def should_stop(self) -> bool:
        from runai_entry.training.dist import is_distributed

        if self._agreed:
            return True
        self._calls += 1
        if not is_distributed():
            self._agreed = self.flag.should_stop()
        elif self._calls % self.every == 0:
            self._agreed = _all_agree(self.flag.should_stop(), any_rank=True)
        return self._agreed

    __bool__ = should_stop


def training_state_dict(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    step: int,
    epoch: int = 0,
    extra: Mapping[str, Any] | None = None,
    rng: bool = True,
) -> dict[str, Any]:
    """The dictionary :func:`save_training_state` writes."""
    deprecated("training_state_dict", "Checkpointer, which saves this state and more",
               stacklevel=2)
    return _training_state_dict(model=model, optimizer=optimizer, scheduler=scheduler,
                                scaler=scaler, step=step, epoch=epoch, extra=extra, rng=rng)


def _training_state_dict(*, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                         scaler: Any, step: int, epoch: int,
                         extra: Mapping[str, Any] | None, rng: bool) -> dict[str, Any]:
    from runai_entry.training._io import oldfile
    from runai_entry.training.continuity import rng_state, unwrap

    state: dict[str, Any] = {
        "format": oldfile.FORMAT,
        "version": oldfile.VERSION,
        "step": int(step),
        "epoch": int(epoch),
        "model": unwrap(model).state_dict(),
        "extra": dict(extra or {}),
    }
    for name, source in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if source is not None:
            state[name] = source.state_dict()
    if rng:
        state["rng"] = rng_state()
    return state


def save_training_state(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    step: int,
    epoch: int = 0,
    extra: Mapping[str, Any] | None = None,
    rng: bool = True,
) -> str | None:
    """Write the training state to ``path`` atomically, one ``torch.save`` file; rank 0 only
    under DDP, every rank hearing whether it worked (:func:`.dist.on_rank0`). Returns the path
    on the rank that wrote, None on the others."""
    deprecated("save_training_state", "Checkpointer (restore(), step(), save()): it also keeps "
               "every rank's RNG states and data position, and writes in the background",
               stacklevel=2)
    import torch

    from runai_entry.training.atomic import atomic_write
    from runai_entry.training.dist import on_rank0

    def write() -> str:
        state = _training_state_dict(model=model, optimizer=optimizer, scheduler=scheduler,
                                     scaler=scaler, step=step, epoch=epoch, extra=extra, rng=rng)
        return atomic_write(path, lambda tmp: torch.save(state, tmp))

    return on_rank0(write, f"saving {os.fspath(path)!r}")


def load_training_state(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    rng: bool = True,
    strict: bool = True,
    weights_only: bool = True,
) -> TrainingState:
    """Restore what :func:`save_training_state` wrote into the given objects; every rank reads,
    onto the CPU. ``weights_only=False`` unpickles arbitrary objects: only for trusted files."""
    deprecated("load_training_state", "Checkpointer.restore(), which loads these files too",
               stacklevel=2)
    from runai_entry.training._io.oldfile import read_training_state

    return read_training_state(path, model=model, optimizer=optimizer, scheduler=scheduler,
                               scaler=scaler, rng=rng, strict=strict, weights_only=weights_only)
