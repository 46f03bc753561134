"""``restore()`` takes any number of named objects with ``state_dict``/``load_state_dict`` (an
EMA model, a second optimizer): saved with every checkpoint and restored bit-identically; the
data position stays the one per-rank object, ``sampler=``."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from runai_entry.core.errors import ConfigError
from runai_entry.training.checkpointer import Checkpointer
from runai_entry.training.continuity import ResumableSampler
from runai_entry.training.errors import CheckpointMismatch
from runai_entry.training.legacy import save_training_state
from tests.harness.flags import quiet_flag
from tests.training_scripts.procs import PYTHON, child_env, spawn


def _objects(seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Linear(6, 2))
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    return {"model": model, "optimizer": torch.optim.Adam(model[0].parameters(), lr=0.1),
            "opt2": torch.optim.SGD(model[1].parameters(), lr=0.1, momentum=0.9), "ema": ema}


def _train(objects: dict[str, Any], steps: int) -> None:
    for _ in range(steps):
        objects["optimizer"].zero_grad()
        objects["opt2"].zero_grad()
        objects["model"](torch.randn(4, 6)).square().mean().backward()
        objects["optimizer"].step()
        objects["opt2"].step()
        objects["ema"].update_parameters(objects["model"])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


@pytest.mark.parametrize("async_save", [False, True])
def test_named_objects_are_saved_and_restored(tmp_path: Path, async_save: bool) -> None:
    """A second optimizer and an EMA model come back equal, into fresh objects."""
    objects = _objects()
    ckpt = Checkpointer(tmp_path, every_steps=3, async_save=async_save, flag=quiet_flag())
    assert ckpt.restore(**objects) == 0
    _train(objects, 3)
    ckpt.step(3, last=True)
    fresh = _objects(seed=7)
    assert not _same(fresh["ema"].state_dict(), objects["ema"].state_dict())
    assert Checkpointer(tmp_path, flag=quiet_flag()).restore(**fresh) == 3
    for name in ("model", "optimizer", "opt2", "ema"):
        assert _same(fresh[name].state_dict(), objects[name].state_dict()), name


def test_a_checkpoint_without_a_named_object_is_a_mismatch(tmp_path: Path) -> None:
    """An object asked for that the checkpoint lacks is named, as a missing optimizer is; a
    0.1.0 file holds none."""
    objects = _objects()
    ckpt = Checkpointer(tmp_path, every_steps=1, flag=quiet_flag())
    ckpt.restore(model=objects["model"], optimizer=objects["optimizer"])
    ckpt.step(1, last=True)
    with pytest.raises(CheckpointMismatch, match="holds no opt2 state to restore"):
        Checkpointer(tmp_path, flag=quiet_flag()).restore(**_objects())
    old = tmp_path / "old"
    old.mkdir()
    save_training_state(old / "step-00000004.pt", model=objects["model"], step=4)
    with pytest.raises(CheckpointMismatch, match=r"0\.1\.0's format\) holds no opt2 state"):
        Checkpointer(old, flag=quiet_flag()).restore(model=objects["model"],
                                                      opt2=objects["opt2"])


@pytest.mark.parametrize(("named", "message"), [
    ({"step": torch.optim.SGD([torch.zeros(1)], lr=0.1)}, "the checkpoint itself uses"),
    ({"ema": object()}, "needs an object with state_dict"),
    ({"loader": torch.utils.data.DataLoader(range(4))}, "pass it as sampler="),
    ({"position": ResumableSampler(4)}, "pass it as sampler="),
])
def test_what_cannot_be_a_named_object_is_one_line(tmp_path: Path, named: dict[str, Any],
                                                   message: str) -> None:
    """A data position given by name would be rank 0's on every rank: it goes in sampler=."""
    ckpt = Checkpointer(tmp_path, flag=quiet_flag())
    with pytest.raises(ConfigError, match=message):
        ckpt.restore(model=torch.nn.Linear(2, 2), **named)


#: A loop with dropout, two optimizers and an EMA model: prints ``step N`` and, at the end, the
#: final state of every object to argv[2].
JOB = textwrap.dedent("""
    import os, sys, time, torch
    from runai_entry.training import Checkpointer
    directory, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2),
                                torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model[0].parameters(), lr=1e-2)
    opt2 = torch.optim.SGD(model[2].parameters(), lr=1e-2, momentum=0.9)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
    ckpt = Checkpointer(directory, keep=2, every_steps=3, async_save=True, background_copy=True)
    step = ckpt.restore(model=model, optimizer=opt, opt2=opt2, ema=ema)
    while not ckpt.done:
        data = torch.Generator().manual_seed(step)
        x = torch.randn(16, 8, generator=data)
        opt.zero_grad(); opt2.zero_grad()
        model(x).square().mean().backward()
        opt2.step(); opt.step()
        ema.update_parameters(model)
        step += 1
        os.write(1, f"step {step}\\n".encode())
        ckpt.step(step, last=step == steps)
        time.sleep(0.02)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(),
                "opt2": opt2.state_dict()["state"], "opt": opt.state_dict()["state"]}, out)
""")


def _run(directory: Path, out: Path, kill_after: int | None = None) -> int:
    with spawn([PYTHON, "-c", JOB, str(directory), str(out), "30"], env=child_env()) as child:
        if kill_after is not None:
            child.expect(rf"^step {kill_after}$", timeout=120)
            os.kill(child.pid, signal.SIGKILL)
        return child.wait(120)


@pytest.mark.slow
def test_a_second_optimizer_and_an_ema_resume_bit_identical_after_a_kill(tmp_path: Path,
                                                                         ) -> None:
    """SIGKILLed twice mid-run (background copies in flight, the second optimizer stepping
    first), resumed from what was published: the model, the EMA and both optimizers' states
    end bit-identical to an uninterrupted run's."""
    assert _run(tmp_path / "a", tmp_path / "a.pt") == 0
    assert _run(tmp_path / "b", tmp_path / "b.pt", kill_after=8) == -signal.SIGKILL
    assert _run(tmp_path / "b", tmp_path / "b.pt", kill_after=20) == -signal.SIGKILL
    assert _run(tmp_path / "b", tmp_path / "b.pt") == 0
    straight, resumed = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    for name in ("model", "ema", "opt2", "opt"):
        assert _same(straight[name], resumed[name]), name
