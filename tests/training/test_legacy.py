"""Every name and module path of 0.1.0 and 0.2 that moved still works, and warns once, naming
where it lives now (runai_entry/training/legacy.py).

Checked in a fresh interpreter: "once per process" and the import hook need a clean
``sys.modules``, and pytest's own imports would hide both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runai_entry.training.legacy import FACADE_NAMES, MOVED_MODULES, TORCH_NAMES
from tests.training_scripts.procs import REPO, child_env

PROBE = r'''
import importlib, json, sys, warnings

results = {}

def probe(label, code, expect=None):
    """Run ``code`` (which binds v) twice under its own file name; what it warned the first
    time and the second, and whether both gave the same object."""
    runs = []
    for _ in range(2):
        space = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(code, "<" + label + ">", "exec"), space)
        runs.append((space["v"], [(str(w.message), w.filename) for w in caught
                                  if issubclass(w.category, DeprecationWarning)]))
    (first, warned), (second, again) = runs
    results[label] = {"warned": warned, "again": again, "same": first is second,
                      "equal": first == second,
                      "expected": None if expect is None else eval(expect) is first}

for name, module in %(facade)r.items():
    probe("facade." + name, f"from runai_entry.training import {name} as v",
          f"importlib.import_module('runai_entry.training.{module}').{name}")
for old, new in %(moved)r.items():
    probe("module." + old, f"import {old} as v", f"importlib.import_module({new!r})")
for name, module in %(torch_names)r.items():
    probe("torch." + name, f"from runai_entry.training.torch import {name} as v",
          f"importlib.import_module({module!r}).{name}")
probe("dcpio.RawReader", "from runai_entry.training.dcpio import RawReader as v",
      "importlib.import_module('runai_entry.training.dcp').RawReader")
probe("dcp.RawReader", "from runai_entry.training.dcp import RawReader as v")

tmp = sys.argv[1]
probe("any_rank", "from runai_entry.training.legacy import any_rank\nv = any_rank(True)")
probe("all_agree", "from runai_entry.training.legacy import all_agree\n"
      "v = all_agree(True, any_rank=False)")
probe("agree_to_stop", "from runai_entry.training.legacy import agree_to_stop\n"
      "from runai_entry.training.stop import StopFlag\nv = agree_to_stop(StopFlag())")
probe("DistributedStop", "from runai_entry.training.legacy import DistributedStop\n"
      "from runai_entry.training.stop import StopFlag\nv = DistributedStop(StopFlag()).every")
probe("save_training_state", "import torch\n"
      "from runai_entry.training.legacy import save_training_state\n"
      f"v = save_training_state({tmp!r}, model=torch.nn.Linear(2, 2), step=7)")
probe("load_training_state", "import torch\n"
      "from runai_entry.training.legacy import load_training_state\n"
      f"v = load_training_state({tmp!r}, model=torch.nn.Linear(2, 2)).step", "7")
probe("training_state_dict", "import torch\n"
      "from runai_entry.training.legacy import training_state_dict\n"
      "v = training_state_dict(model=torch.nn.Linear(2, 2), step=3)['step']")
print(json.dumps(results))
'''

#: The retired functions: what each call returns, and what its warning names instead.
RETIRED = {
    "any_rank": "dist.agree",
    "all_agree": "dist.agree",
    "agree_to_stop": "dist.agree",
    "DistributedStop": "Checkpointer",
    "save_training_state": "Checkpointer",
    "load_training_state": "Checkpointer.restore()",
    "training_state_dict": "Checkpointer",
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    target = tmp_path_factory.mktemp("legacy") / "state.pt"
    code = PROBE % {"facade": FACADE_NAMES, "moved": MOVED_MODULES, "torch_names": TORCH_NAMES}
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                         text=True, env=child_env(), cwd=str(REPO), timeout=120)
    assert out.returncode == 0, out.stderr
    results: dict[str, dict[str, object]] = json.loads(out.stdout)
    assert Path(target).exists()
    return results


def _warned_once(result: dict[str, object], label: str, *names: str) -> str:
    """The one warning ``label`` gave, attributed to the line that asked; none the second time."""
    warned = result["warned"]
    assert isinstance(warned, list) and len(warned) == 1, (label, warned)
    message, filename = warned[0]
    assert filename == f"<{label}>", (label, filename)  # the user's line, not the library's
    for name in names:
        assert name in message, (label, message)
    assert result["again"] == [], label
    assert result["equal"], label
    return str(message)


@pytest.mark.slow
def test_facade_names_of_010_warn_once_naming_their_module(probed: dict) -> None:
    """``from runai_entry.training import prune`` works, and says it lives in .atomic."""
    for name, module in FACADE_NAMES.items():
        result = probed[f"facade.{name}"]
        _warned_once(result, f"facade.{name}", f"runai_entry.training.{name}",
                     f"runai_entry.training.{module}")
        assert result["same"] and result["expected"] is True, name


@pytest.mark.slow
def test_moved_module_paths_import_the_module_itself_and_warn_once(probed: dict) -> None:
    """``import runai_entry.training.tensorfile`` yields the very module now in _io (one class
    per class), with one warning naming it."""
    for old, new in MOVED_MODULES.items():
        result = probed[f"module.{old}"]
        _warned_once(result, f"module.{old}", old, new.rsplit(".", 1)[0])
        assert result["same"] and result["expected"] is True, old


@pytest.mark.slow
def test_the_torch_path_names_where_its_names_went(probed: dict) -> None:
    """runai_entry.training.torch (it shadowed torch in tracebacks and IDEs) still hands out
    each name that moved (ResumableSampler, rng_state, rank, ...) as its new module's own
    object, and its FORMAT is tensorfile's (one constant), warning once, at the import."""
    for name in TORCH_NAMES:
        result = probed[f"torch.{name}"]
        assert result["same"] and result["expected"] is True, name
        # The path warned already when test_moved_module_paths imported it: once per process.
        assert result["warned"] == [] and result["again"] == [], name
    message = probed["module.runai_entry.training.torch"]["warned"][0][0]  # type: ignore[index]
    assert "runai_entry.training.continuity" in message and "dist.agree" in message


@pytest.mark.slow
def test_raw_reader_has_a_public_home(probed: dict) -> None:
    """RawReader (needed to dcp.load the Checkpointer's shards) is public in .dcp, without a
    warning; the old path names that home."""
    assert probed["dcp.RawReader"]["warned"] == []
    assert probed["dcpio.RawReader"]["expected"] is True
    message = probed["module.runai_entry.training.dcpio"]["warned"][0][0]  # type: ignore[index]
    assert "runai_entry.training.dcp" in message


@pytest.mark.slow
def test_retired_functions_still_work_and_warn_once_naming_the_replacement(probed: dict,
                                                                          ) -> None:
    """save/load_training_state round-trip a file, the stop agreements answer (one process:
    the local value), each warning once with what to use instead."""
    for label, instead in RETIRED.items():
        _warned_once(probed[label], label, label, instead)
    assert probed["load_training_state"]["expected"] is True  # the step saved
