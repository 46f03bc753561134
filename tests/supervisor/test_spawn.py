"""How the command is started: its own group, clean signal state, untouched stdio, exact argv."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.spawning import ENTRY


def _status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


class TestCleanSignalState:
    def test_child_starts_with_empty_mask_and_default_dispositions(self, tmp_path: Path) -> None:
        """Even when runai-entry's own parent ignored and blocked signals, the command starts clean.

        runai-entry blocks every signal it forwards; a trainer that inherited that mask would
        never see its SIGTERM. nohup-style ignored signals must not leak through either.
        """
        def hostile_parent() -> None:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGINT})

        out = subprocess.run([*ENTRY, "cat", "/proc/self/status"], capture_output=True,
                             text=True, timeout=30, preexec_fn=hostile_parent)
        assert out.returncode == 0, out.stderr
        fields = _status_fields(out.stdout)
        assert int(fields["SigBlk"], 16) == 0
        assert int(fields["SigIgn"], 16) == 0

    def test_own_process_group(self, tmp_path: Path) -> None:
        """The command leads a new process group, not runai-entry's."""
        out = subprocess.run(
            [*ENTRY, sys.executable, "-c",
             "import os; print(os.getpid(), os.getpgrp(), os.getppid(), os.getpgid(os.getppid()))"],
            capture_output=True, text=True, timeout=30)
        pid, pgrp, _, parent_pgrp = map(int, out.stdout.split())
        assert pgrp == pid and parent_pgrp != pgrp


class TestStdio:
    def test_stdin_stdout_stderr_are_the_users(self, tmp_path: Path) -> None:
        """The job reads runai-entry's stdin and writes to the same stdout/stderr files."""
        src = tmp_path / "in.txt"
        src.write_bytes(b"".join(b"line %d\n" % i for i in range(10000)))
        out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
        with src.open("rb") as fin, out_path.open("wb") as fout, err_path.open("wb") as ferr:
            rc = subprocess.run([*ENTRY, "sh", "-c", "cat; echo to-stderr >&2"], stdin=fin,
                                stdout=fout, stderr=ferr, timeout=30,
                                env=dict(os.environ, RUNAI_ENTRY_LOG_FORMAT="json")).returncode
        assert rc == 0
        assert out_path.read_bytes() == src.read_bytes()
        assert b"to-stderr\n" in err_path.read_bytes()


    def test_closed_log_reader_does_not_kill_the_supervisor(self) -> None:
        """When nobody reads stderr any more, logging fails quietly and the job goes on."""
        proc = subprocess.Popen([*ENTRY, "sh", "-c", "sleep 0.5; echo survived; exit 6"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None and proc.stdout is not None
        proc.stderr.close()  # the reader goes away before the first event is written
        out = proc.stdout.read()
        assert proc.wait(30) == 6
        assert out == b"survived\n"


class TestArgv:
    def test_arguments_are_passed_verbatim_without_a_shell(self, tmp_path: Path) -> None:
        """Spaces, quotes, globs and dollar signs reach the command as single arguments."""
        args = ["a b", "'q'", '"dq"', "*", "$HOME", "--flag=x y", "", "ünï"]
        out = subprocess.run([*ENTRY, sys.executable, "-c",
                              "import json,sys; print(json.dumps(sys.argv[1:]))", *args],
                             capture_output=True, text=True, timeout=30)
        assert json.loads(out.stdout) == args


class TestSpawnFailures:
    @pytest.mark.parametrize(
        ("make", "code", "message"),
        [
            (lambda d: "no-such-command-xyz", 127, "command not found: no-such-command-xyz"),
            (lambda d: str(d / "missing" / "x"), 127, "command not found:"),
            (lambda d: str(d), 126, "cannot execute"),  # a directory
            (lambda d: _file(d / "noexec.sh", "#!/bin/sh\necho hi\n", 0o644), 126,
             "cannot execute"),
            (lambda d: _file(d / "garbage", "\x7fELF-not-really", 0o755), 126, "cannot execute"),
        ],
    )
    def test_codes_and_one_line_messages(self, tmp_path: Path, make, code: int,
                                         message: str) -> None:
        """Not found → 127, not executable → 126, one line naming the command, no traceback."""
        cmd = make(tmp_path)
        r = subprocess.run([*ENTRY, "--log-format", "console", cmd], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == code
        assert message in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _file(path: Path, text: str, mode: int) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)
