"""Every catchable signal runai-entry receives reaches the job, which keeps running."""

from __future__ import annotations

import signal

import pytest

from tests.harness.spawning import probe

FORWARDED = [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGWINCH, signal.SIGCONT, signal.SIGALRM, signal.SIGURG,
             signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU, signal.SIGPWR, signal.SIGTSTP]


@pytest.mark.parametrize("pid1", [False, True], ids=["subreaper", "pid1"])
class TestForwarding:
    def test_each_signal_is_forwarded_and_the_job_keeps_running(self, entry, pid1: bool) -> None:
        """Each forwarded signal reaches the job's handler; the job then finishes normally."""
        e = entry([*probe("--run-seconds", "60")], pid1=pid1)
        e.expect(r"ready")
        for s in FORWARDED:
            e.signal(s)
            e.expect(rf"signal {s.name}$")
        e.signal(signal.SIGTERM)
        e.expect("saved")
        assert e.wait() == 1
        forwarded = {ev["signal"] for ev in e.events() if ev["event"] == "signal_forwarded"}
        assert forwarded == {s.name for s in FORWARDED}

    def test_every_process_of_the_group_gets_it(self, entry, pid1: bool) -> None:
        """A signal goes to the whole process group, not only the direct child."""
        script = f"{' '.join(probe('--name', 'a'))} & {' '.join(probe('--name', 'b'))} & wait"
        e = entry(["sh", "-c", script], pid1=pid1)
        e.expect("ready")
        e.expect("ready")
        e.signal(signal.SIGUSR1)
        got = {e.expect(r"^(a|b) signal SIGUSR1").group(1) for _ in range(2)}
        assert got == {"a", "b"}


class TestNotPreemption:
    def test_sigint_is_forwarded_not_a_preemption(self, entry) -> None:
        """Ctrl-C is passed on; the exit code is the job's own, not the preemption code."""
        e = entry(probe("--stop-signal", "SIGINT", "--exit-code", "5"))
        e.expect("ready")
        e.signal(signal.SIGINT)
        e.expect("saved")
        assert e.wait() == 5
        assert e.event("exit")["reason"] == "failed"
