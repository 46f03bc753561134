"""The stop flag, with real signals delivered to this process or to a traced child."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runai_entry.core import envvars
from runai_entry.core.errors import ConfigError
from runai_entry.training.atomic import atomic_write
from runai_entry.training.stop import StopFlag, parse_signal, preemption
from tests.training_scripts.procs import PYTHON, child_env, script, spawn


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(envvars.STOP_SIGNAL, raising=False)
    monkeypatch.delenv(envvars.STOP_TIMEOUT, raising=False)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _deliver(sig: int) -> None:
    """Send ``sig`` to this process and let the interpreter run the Python-level handler."""
    os.kill(os.getpid(), sig)
    for _ in range(100):
        time.sleep(0.001)  # handlers run between bytecodes of the main thread


class TestStopFlag:
    def test_defaults_outside_runai_entry(self) -> None:
        """Plain `python train.py`: SIGTERM, no deadline."""
        with preemption() as flag:
            assert flag.signals == (signal.SIGTERM,)
            assert not flag.should_stop() and flag.time_left() is None
            _deliver(signal.SIGTERM)
            assert flag.should_stop() and bool(flag)
            assert flag.signal == signal.SIGTERM and flag.count == 1
            assert flag.time_left() is None  # no deadline known

    def test_signal_and_deadline_from_runai_entry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(envvars.STOP_SIGNAL, "SIGUSR1")
        monkeypatch.setenv(envvars.STOP_TIMEOUT, "25.5")
        with preemption() as flag:
            assert flag.signals == (signal.SIGUSR1,)
            assert flag.time_left() is None  # the clock starts at the signal
            _deliver(signal.SIGUSR1)
            before = time.monotonic()
            left = flag.time_left()
            assert left is not None and 25.0 < left <= 25.5
            assert flag.deadline == pytest.approx(before + left, abs=0.05)
            _deliver(signal.SIGUSR1)  # a repeat does not restart the clock
            assert flag.count == 2 and flag.deadline == pytest.approx(before + left, abs=0.05)

    def test_time_left_never_negative(self) -> None:
        flag = StopFlag(timeout=0.0)
        flag.request()
        assert flag.should_stop() and flag.time_left() == 0.0 and flag.signal is None

    @pytest.mark.parametrize("value", ["SIGNOPE", "99999", "TERM2"])
    def test_bad_signal_env_fails_loudly(self, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(envvars.STOP_SIGNAL, value)
        with pytest.raises(ConfigError):
            StopFlag()

    @pytest.mark.parametrize("value", ["soon", "-1", "nan"])
    def test_bad_timeout_env_fails_loudly(
        self, value: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(envvars.STOP_TIMEOUT, value)
        with pytest.raises(ConfigError):
            StopFlag()

    def test_parse_signal_spellings(self) -> None:
        for text in ("SIGUSR1", "usr1", "USR1", str(int(signal.SIGUSR1)), int(signal.SIGUSR1)):
            assert parse_signal(text) == signal.SIGUSR1

    def test_uninstall_restores_previous_handler(self) -> None:
        def previous(signum: int, frame: object) -> None:
            pass

        signal.signal(signal.SIGUSR1, previous)
        flag = StopFlag(["SIGUSR1"]).install()
        assert signal.getsignal(signal.SIGUSR1) == flag._on_signal
        flag.install()  # idempotent: must not remember itself as "previous"
        flag.uninstall()
        assert signal.getsignal(signal.SIGUSR1) is previous
        assert not flag.installed

    def test_ctrl_c_asks_once_then_interrupts(self) -> None:
        with preemption(interrupt=True) as flag:
            assert signal.SIGINT in flag.signals
            _deliver(signal.SIGINT)
            assert flag.should_stop() and flag.signal == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                _deliver(signal.SIGINT)

    def test_printing_the_flag_is_not_a_heartbeat(self, tmp_path: Path) -> None:
        """repr and str report the flag without beating: a loop hung while something logs the
        flag must still look hung to the watchdog. should_stop, by contrast, beats."""
        code = ("import sys\nfrom runai_entry.training.stop import StopFlag\n"
                "flag = StopFlag()\nprint(repr(flag), f'{flag}')\n"
                "if sys.argv[1] == 'poll':\n    flag.should_stop()\n")
        env = child_env(**{envvars.HEARTBEAT_DIR: str(tmp_path)})
        printed = subprocess.run([PYTHON, "-c", code, "print"], env=env, capture_output=True,
                                 text=True, timeout=60)
        assert printed.returncode == 0 and "stop=False" in printed.stdout, printed.stderr
        assert os.listdir(tmp_path) == []
        subprocess.run([PYTHON, "-c", code, "poll"], env=env, check=True, timeout=60)
        assert len(os.listdir(tmp_path)) == 1  # the check above would see a beat


class TestSignalDuringSave:
    def _slow_writer(self, chunks: int, started: threading.Event) -> object:
        def write(path: str) -> None:
            with open(path, "wb") as f:
                started.set()
                for i in range(chunks):
                    f.write(bytes([i % 256]) * 4096)
                    time.sleep(0.01)

        return write

    def _signal_later(self, started: threading.Event, *sigs: int) -> threading.Thread:
        def send() -> None:
            started.wait(10)
            for sig in sigs:
                time.sleep(0.05)
                os.kill(os.getpid(), sig)

        thread = threading.Thread(target=send)
        thread.start()
        return thread

    def test_repeated_stop_signals_do_not_disturb_a_save(self, tmp_path: Path) -> None:
        final = tmp_path / "ckpt-1.pt"
        started = threading.Event()
        with preemption() as flag:
            sender = self._signal_later(started, signal.SIGTERM, signal.SIGTERM, signal.SIGTERM)
            atomic_write(final, self._slow_writer(40, started))  # type: ignore[arg-type]
            sender.join()
        assert flag.count == 3
        data = final.read_bytes()
        assert len(data) == 40 * 4096
        assert all(data[i * 4096] == i for i in range(40))
        assert os.listdir(tmp_path) == ["ckpt-1.pt"]

    def test_second_ctrl_c_abandons_the_save_but_keeps_the_old_file(self, tmp_path: Path) -> None:
        final = tmp_path / "ckpt-1.pt"
        final.write_bytes(b"previous complete checkpoint")
        started = threading.Event()
        with preemption(interrupt=True):
            sender = self._signal_later(started, signal.SIGINT, signal.SIGINT)
            with pytest.raises(KeyboardInterrupt):
                atomic_write(final, self._slow_writer(100, started))  # type: ignore[arg-type]
            sender.join()
        assert final.read_bytes() == b"previous complete checkpoint"
        assert os.listdir(tmp_path) == ["ckpt-1.pt"]


IO_SYSCALLS = re.compile(
    r"\b(write|writev|pwrite64|pwritev2?|openat|open|creat|sendto|sendmsg|unlink|unlinkat|"
    r"rename|renameat2?|fsync|fdatasync|mkdir|mkdirat)\("
)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
@pytest.mark.parametrize(("handler", "expect_io"), [("library", False), ("print", True)])
def test_handler_does_no_io(tmp_path: Path, handler: str, expect_io: bool) -> None:
    """Traced with strace: between the signal's delivery and the probe's MARK write, the only
    code that runs is the interpreter's signal machinery and the Python handler, because the
    probe spins without system calls. The printing handler is the control."""
    trace = tmp_path / "trace.txt"
    argv = [
        "strace",
        "-f",
        "-qq",
        "-o",
        str(trace),
        "-e",
        "trace=all",
        PYTHON,
        script("flag_probe.py"),
    ]
    if handler == "print":
        argv += ["--handler", "print"]
    with spawn(argv, env=child_env()) as child:
        pid = int(child.expect(r"^ready (\d+)").group(1))
        os.kill(pid, signal.SIGTERM)
        child.expect(r"^MARK")
        assert child.wait(30) == 0
    lines = [line for line in trace.read_text().splitlines() if line.startswith(f"{pid} ")]
    start = next(i for i, line in enumerate(lines) if "--- SIGTERM" in line)
    end = next(i for i, line in enumerate(lines) if i > start and 'write(1, "MARK' in line)
    io = [line for line in lines[start + 1 : end] if IO_SYSCALLS.search(line)]
    assert bool(io) is expect_io, "\n".join(lines[start : end + 1])
