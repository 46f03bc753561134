"""--resume-flag in the forms scripts take: what each template hands the job, checked at
start-up; the recipes of docs/integrations.md run against a stand-in script of each shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runai_entry.config.resumeflag import resume_args
from tests.harness.spawning import ENTRY, TESTS

STANDIN = str(TESTS / "training_scripts" / "resume_standin.py")
WRAPPER = TESTS / "training_scripts" / "resume_wrapper.sh"
DOCS = (TESTS.parent / "docs" / "integrations.md").read_text()


class TestTemplate:
    @pytest.mark.parametrize(("template", "expected"), [
        ("--resume-from", ["--resume-from", "/c/x.pt"]),  # flag, then path: as before
        ("--resume={path}", ["--resume=/c/x.pt"]),
        ("--init_from=resume", ["--init_from=resume"]),  # the script finds its own file
        ("", []),
        ("+trainer.ckpt='{path}'", ["+trainer.ckpt='/c/x.pt'"]),
        ("--x={{{path}}}", ["--x={/c/x.pt}"]),  # doubled braces are literal
    ])
    def test_what_each_template_hands_the_job(self, template: str,
                                              expected: list[str]) -> None:
        assert resume_args(template, "/c/x.pt") == expected

    @pytest.mark.parametrize(("template", "named"), [
        ("--resume={pth}", "unknown placeholder '{pth}'"),
        ("--resume={path", "unclosed '{'"),
        ("--resume=path}", "a '}' without its '{'"),
        ("--resume=", "ends in '='"),
        ("--resume {path}", "whitespace"),
    ])
    def test_a_malformed_template_is_exit_2_at_start_up(self, tmp_path: Path, template: str,
                                                        named: str) -> None:
        """Refused before the job starts, not at the first resume (after a preemption)."""
        marker = tmp_path / "ran"
        for how in (["--resume-flag", template], []):
            env = dict(os.environ, RUNAI_ENTRY_RESUME_FLAG=template) if not how else None
            r = subprocess.run([*ENTRY, *how, "--checkpoint-dir", str(tmp_path), "--",
                                "touch", str(marker)], capture_output=True, text=True,
                               timeout=60, env=env)
            assert r.returncode == 2, r.stderr
            assert r.stderr.count("\n") == 1 and named in r.stderr, r.stderr
            assert ("--resume-flag" if how else "RUNAI_ENTRY_RESUME_FLAG") in r.stderr
        assert not marker.exists()


def _got(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line[4:]) for line in stdout.splitlines() if line.startswith("got ")]


def _two_attempts(cwd: Path, shape: str, entry: list[str], command: list[str]
                  ) -> list[dict[str, object]]:
    """Attempt 1 saves and fails; attempt 2 resumes and exits 0. What each received."""
    got = []
    for expected in (3, 0):
        r = subprocess.run([*ENTRY, "--log-format", "json", *entry, "--", *command],
                           capture_output=True, text=True, timeout=60, cwd=cwd,
                           env=dict(os.environ, STANDIN_SHAPE=shape))
        assert r.returncode == expected, r.stdout + r.stderr[-2000:]
        got += _got(r.stdout)
    assert len(got) == 2
    return got


class TestRecipes:
    def test_nanogpt_style_under_the_drill(self, tmp_path: Path) -> None:
        """--key=value, the script's own fixed path: --resume-flag '--init_from=resume'. The
        relative --checkpoint-dir reaches the job's variables absolute."""
        r = subprocess.run(
            [*ENTRY, "--log-format", "json", "--simulate-preempt", "3s", "--simulate-requeue",
             "1", "--checkpoint-dir", "out", "--resume-flag", "--init_from=resume", "--",
             sys.executable, STANDIN, "--out_dir=out"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            env=dict(os.environ, STANDIN_SHAPE="nanogpt", STANDIN_WAIT="1"))
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        first, second = _got(r.stdout)
        assert first["argv"] == ["--out_dir=out"] and first["resume"] is None
        assert second["argv"] == ["--out_dir=out", "--init_from=resume"]
        assert second["resume"] == "out/ckpt.pt"
        assert second["RUNAI_ENTRY_RESUME_FROM"] == str(tmp_path / "out" / "ckpt.pt")
        assert first["RUNAI_ENTRY_CHECKPOINT_DIR"] == str(tmp_path / "out")

    @pytest.mark.parametrize(("flag", "resume_args_"), [
        ("--resume", ["--resume", "{ckpt}"]),
        ("--resume={path}", ["--resume={ckpt}"]),
    ])
    def test_argparse_resume_path(self, tmp_path: Path, flag: str,
                                  resume_args_: list[str]) -> None:
        """argparse's --resume PATH, in both spellings; the script changes directory before it
        opens the path, which a relative --checkpoint-dir would break."""
        first, second = _two_attempts(tmp_path, "argparse",
                                      ["--checkpoint-dir", "ckpt", "--resume-flag", flag],
                                      [sys.executable, STANDIN])
        ckpt = str(tmp_path / "ckpt" / "step-7.pt")
        assert first["argv"] == []
        assert second["argv"] == [a.replace("{ckpt}", ckpt) for a in resume_args_]
        assert second["resume"] == ckpt

    def test_hf_trainer_resume_from_checkpoint(self, tmp_path: Path) -> None:
        """The Trainer script's own --resume_from_checkpoint DIR: the checkpoint-N directory."""
        first, second = _two_attempts(
            tmp_path, "hf", ["--checkpoint-dir", "ckpt",
                             "--resume-flag=--resume_from_checkpoint"],
            [sys.executable, STANDIN])
        ckpt = str(tmp_path / "ckpt" / "checkpoint-7")
        assert first["argv"] == []
        assert second["argv"] == ["--resume_from_checkpoint", ckpt]

    def test_wrapper_keyed_on_the_variable(self, tmp_path: Path) -> None:
        """--resume-flag '' and a wrapper that adds the script's own switch when
        RUNAI_ENTRY_RESUME_FROM is set; the wrapper in the docs is this file."""
        assert WRAPPER.read_text() in DOCS
        first, second = _two_attempts(
            tmp_path, "nanogpt", ["--checkpoint-dir", "out", "--resume-flag", ""],
            [str(WRAPPER), sys.executable, STANDIN, "--out_dir=out"])
        assert first["argv"] == ["--out_dir=out"]
        assert second["argv"] == ["--out_dir=out", "--init_from=resume"]
        assert second["RUNAI_ENTRY_RESUME_FROM"] == str(tmp_path / "out" / "ckpt.pt")


def test_inspect_shows_what_the_command_gets(tmp_path: Path) -> None:
    """--inspect builds the flag as the start does, and says when it assumed the default."""
    (tmp_path / "ckpt.pt").write_bytes(b"\x80\x04K\x07.")  # pickle of 7: complete
    lines = {}
    for flag in ("--init_from=resume", "--resume={path}", "", None):
        how = [] if flag is None else ["--resume-flag", flag]
        r = subprocess.run([*ENTRY, "--inspect", "--checkpoint-dir", str(tmp_path), *how],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        lines[flag] = next(x.strip() for x in r.stdout.splitlines() if "command gets" in x)
    path = tmp_path / "ckpt.pt"
    assert lines["--init_from=resume"] == "the command gets: --init_from=resume"
    assert lines["--resume={path}"] == f"the command gets: --resume={path}"
    assert lines[""] == "the command gets: no argument (only RUNAI_ENTRY_RESUME_FROM)"
    assert lines[None].startswith(f"the command gets: --resume-from {path} (the default")
