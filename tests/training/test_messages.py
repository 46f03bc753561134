"""What the Checkpointer says goes through logging (``runai_entry.training``) and one-time advice
through warnings: a user silences or routes it with the standard API, and a script that
configures nothing still sees it on stderr, as before 0.3.

Each case runs in a fresh interpreter: logging's configuration is global, and pytest's own
handlers on the root logger would hide the default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.training_scripts.procs import REPO, child_env

#: One Checkpointer that says a line (the variable wins over its argument), logs its saves
#: (verbose: INFO) and gets advice (a 1 ms stop budget); ``SETUP`` comes first.
JOB = """
import logging, os, sys, warnings
{setup}
import torch
from runai_entry.training import Checkpointer, StopFlag
ckpt = Checkpointer(sys.argv[1] + "/local", every_steps=1, verbose=True,
                    flag=StopFlag(signals=[], timeout=0.001))
ckpt.restore(model=torch.nn.Linear(64, 64))
ckpt.step(1)
print("done", flush=True)
"""

SAID = "wins over the directory argument"


def _run(tmp_path: Path, setup: str) -> tuple[str, str]:
    env = child_env(RUNAI_ENTRY_CHECKPOINT_DIR=str(tmp_path / "mounted"))
    done = subprocess.run([sys.executable, "-c", JOB.format(setup=setup), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120)
    assert done.returncode == 0 and done.stdout.endswith("done\n"), done.stderr
    return done.stdout, done.stderr


@pytest.mark.slow
def test_unconfigured_the_lines_are_on_stderr_as_before(tmp_path: Path) -> None:
    """No logging set up: warnings and INFO alike, prefixed, one line each; the advice is a
    UserWarning pointing at the loop's own line (``ckpt.step(1)``)."""
    _, err = _run(tmp_path, "")
    lines = err.splitlines()
    assert sum(line.startswith("runai-entry checkpointer: ") and SAID in line
               for line in lines) == 1, err
    assert "runai-entry checkpointer: saving step 1" in lines, err
    assert any(line.startswith("runai-entry checkpointer: saved step 1 in ") for line in lines)
    assert "<string>:9: UserWarning: runai-entry checkpointer: checkpoint budget: " in err, err


@pytest.mark.slow
def test_a_configured_application_gets_the_records_once_in_its_own_format(
        tmp_path: Path) -> None:
    """basicConfig: the records reach the application's handler, and the fallback is silent
    (no line twice)."""
    _, err = _run(tmp_path, 'logging.basicConfig(format="ROUTED %(name)s %(levelname)s '
                            '%(message)s", level=logging.INFO)')
    assert f"ROUTED runai_entry.training WARNING {tmp_path}" not in err  # the message starts
    assert sum(SAID in line for line in err.splitlines()) == 1, err        # with the variable
    assert any(line.startswith("ROUTED runai_entry.training WARNING RUNAI_ENTRY_CHECKPOINT_DIR")
               and SAID in line for line in err.splitlines()), err
    assert "ROUTED runai_entry.training INFO saving step 1" in err
    assert "runai-entry checkpointer: saving" not in err


@pytest.mark.slow
def test_a_handler_on_the_library_logger_takes_them_alone(tmp_path: Path) -> None:
    """A handler on ``runai_entry.training`` itself (to stdout here): stderr no longer shows
    the lines."""
    out, err = _run(tmp_path, 'logging.getLogger("runai_entry.training").addHandler('
                              'logging.StreamHandler(sys.stdout))')
    assert SAID in out and "saving step 1" in out
    assert SAID not in err and "saving step" not in err


@pytest.mark.slow
def test_the_standard_api_silences_them(tmp_path: Path) -> None:
    """A level on the library's logger and a warnings filter: nothing on stderr."""
    _, err = _run(tmp_path, 'logging.getLogger("runai_entry.training").setLevel(logging.ERROR)\n'
                            'warnings.filterwarnings("ignore", message="runai-entry checkpointer")')
    assert err == ""
