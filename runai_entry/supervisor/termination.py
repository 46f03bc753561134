"""The termination message: at exit, a few lines that ``kubectl describe pod`` shows.

Kubernetes reads ``/dev/termination-log`` (``terminationMessagePath``) when a container ends and
shows it as the container's last state, in ``kubectl describe pod``, the pod's status and the
Run:ai UI: where people look when a job restarted, and until now they found nothing there about
why (kubernetes #111719, #81285). So runai-entry leaves one short summary: the outcome and why
the exit code is what it is (preempted → the requeue code), the attempt, the checkpoint resumed
from and the newest one (step and age), the work lost, the grace used of the budget, and the
first failure. Kubernetes keeps 4096 bytes of it: names come from a shared directory and may be
anything, so each is escaped (:func:`~runai_entry.core.printable.printable`) and shortened, and
the whole is cut below the limit.

``--termination-log PATH`` (``auto``: ``/dev/termination-log`` when it exists and is writable,
which Kubernetes provides in every container; ``off`` or ``''``: none). The write runs in a
helper process against a short deadline (:mod:`runai_entry.supervisor.storage_io`): a path on a
hung mount must not hold the exit code the platform waits for. A failure to write is one warning; it
changes no exit code.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from runai_entry.config.loading import Config
from runai_entry.config.loading import termination_target as target
from runai_entry.core.attempt_record import AttemptRecord, Checkpoint
from runai_entry.core.outcome import Outcome
from runai_entry.core.printable import printable

if TYPE_CHECKING:
    from runai_entry.supervisor.attempt import Attempt

#: Kubernetes keeps this many bytes per container; the message stays strictly under it.
MAX_BYTES = 4096
#: What the message may take: under :data:`MAX_BYTES`, with room for a multi-byte character cut.
BUDGET_BYTES = 4000
#: The most of one name shown: its start and end, around an ellipsis.
MAX_NAME = 160
#: The most one line may take, error lines included (they quote paths and commands).
MAX_LINE = 600
#: The longest the write may take: a local write takes microseconds; during a preemption what
#: is left of the kill margin is for our exit, so a quarter of it at most.
WRITE_TIMEOUT = 1.0

_REQUEUE = "the requeue code: the platform starts the job again"


def leave(config: Config, attempt: Attempt | None = None, *, error: str | None = None,
          exit_code: int | None = None) -> None:
    """Write the message for ``attempt`` (or for ``error``, when none ran: ``exit_code``).
    Never raises; a failure is one warning on the log."""
    path = target(config)
    if path is None:
        return
    try:
        text = message(config, attempt, error=error, exit_code=exit_code, now=time.time())
        _write(path, text, max(0.1, min(WRITE_TIMEOUT, config.kill_margin / 4)))
    except Exception as exc:  # the last resort: the exit code matters more than the message
        from runai_entry.core.errors import describe_bug, os_error_cause
        from runai_entry.supervisor.logs import configure
        from runai_entry.supervisor.storage_io import HelperTimeout

        if isinstance(exc, HelperTimeout):
            problem = str(exc)
        elif isinstance(exc, OSError):
            problem = os_error_cause(exc)
        else:
            problem = f"a bug in runai-entry: {describe_bug(exc)}"
        configure(config.log_format, config.log_level).warning(
            "termination_log_not_written", path=path, problem=problem)


def _write(path: str, text: str, timeout: float) -> None:
    """``text`` into ``path`` from a helper process; OSError or HelperTimeout when it fails."""
    from runai_entry.core.signals import handled_signals
    from runai_entry.supervisor import storage_io

    data = text.encode("utf-8")

    def work(stage: Any) -> None:
        stage(f"writing {path!r}")
        # O_NONBLOCK: a FIFO there must not hold the open; O_NOFOLLOW: runai-entry runs as
        # root, and a link planted there must not aim the write elsewhere.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    # Signals meanwhile are dropped: the job is gone, and so, in a moment, are we.
    storage_io.call(work, "termination log", timeout, handled_signals(), lambda signum: None)


# -- the message ----------------------------------------------------------------------------------


def message(config: Config, attempt: Attempt | None, *, error: str | None = None,
            exit_code: int | None = None, now: float) -> str:
    """The message, under :data:`MAX_BYTES` whatever the names. Pure but for ``now``."""
    facts = _facts(attempt)
    code = attempt.exit_code if attempt is not None else exit_code
    lines = [f"runai-entry: {_why(config, facts, code, error)}"]
    if facts.attempt is not None:
        line = f"attempt {facts.attempt}"
        if facts.member not in (None, "0"):  # several members share the directory
            line += f" of member {facts.member}"
        if facts.ran_for_s is not None:
            line += f", ran {_span(facts.ran_for_s)}"
        lines.append(line)
    if facts.started_at is not None:  # a history record: the checkpoints are known
        resumed = _checkpoint(facts.resumed, now) or "nothing (a fresh start)"
        lines.append(f"resumed from: {resumed}")
        lines.append(f"newest checkpoint: {_checkpoint(facts.newest, now) or 'none'}")
        lost = _lost(facts)
        if lost is not None:
            lines.append(f"lost work: {lost}")
    grace, budget = facts.grace_used_s, facts.stop_timeout_s or config.stop_timeout
    if grace is not None:
        lines.append(f"grace used: {_span(grace)} of the {budget:g}s budget "
                     f"({grace / budget:.0%}) from the stop signal to the last process gone")
    if facts.first_failure is not None:
        from runai_entry.history.report import ended

        lines.append(f"first failure: {ended(facts.first_failure)}")
    return fit(lines)


def fit(lines: list[str]) -> str:
    """The lines escaped, each and all of them cut to fit: strictly under :data:`MAX_BYTES`."""
    text = "\n".join(shorten(printable(line), MAX_LINE) for line in lines) + "\n"
    data = text.encode("utf-8")
    if len(data) > BUDGET_BYTES:  # cut at a character: decoding drops a half one
        text = data[:BUDGET_BYTES].decode("utf-8", errors="ignore").rstrip("\n") + "…\n"
    return text


def shorten(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters: its start and its end around an ellipsis (a
    checkpoint's step is at its end, a directory's name at its start)."""
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return f"{text[:keep]}…{text[len(text) - keep:]}"


def _facts(attempt: Attempt | None) -> AttemptRecord:
    """The attempt as the history records it (checked as the history reads it), with what the
    supervisor's result says for what the record lacks (all of it without a checkpoint
    directory)."""
    if attempt is None:
        return AttemptRecord()
    facts = attempt.record if attempt.record is not None else AttemptRecord.partial()
    result = attempt.result
    if result is not None:
        from runai_entry.supervisor.before_and_after import process_failure

        failure = result.first_failure
        facts = facts.filled(
            outcome=result.outcome, returncode=result.returncode, simulated=result.simulated,
            ran_for_s=result.ran_for, grace_used_s=result.grace_used, hang=result.hang,
            followed=result.followed,
            first_failure=None if failure is None else process_failure(failure, None))
    return facts


def _why(config: Config, facts: AttemptRecord, code: int | None, error: str | None) -> str:
    """The outcome, and why the exit code is what it is."""
    outcome = facts.outcome
    if error is not None:
        return f"not started: {error} → exit {code}{_code_meaning(code)}"
    if outcome == Outcome.COMPLETED:
        return "completed: the command exited 0 → exit 0"
    if outcome == Outcome.FAILED:
        rc = facts.returncode
        how = "?" if rc is None else (
            f"was killed by signal {-rc} → exit {code} (128 + the signal)" if rc < 0
            else f"exited {rc} → exit {code} (its own status)")
        return f"failed: the command {how}"
    if outcome == Outcome.PREEMPTED and facts.ran_for_s is None:  # no result: never started
        return f"preempted before the job started (SIGTERM) → exit {code}, {_REQUEUE}"
    if outcome == Outcome.PREEMPTED:
        cause = "--simulate-preempt" if facts.simulated else "SIGTERM"
        return f"preempted ({cause}) and stopped within the grace period → exit {code}, {_REQUEUE}"
    if outcome == Outcome.KILLED_AT_DEADLINE:
        return (f"preempted, and SIGKILLed at the deadline: still running "
                f"{config.stop_timeout:g}s after the stop signal (the save did not finish) → "
                f"exit {code}, {_REQUEUE}")
    if outcome == Outcome.FOLLOWED_PEER:
        return (f"member {facts.followed_member or '?'} of the job was preempted, so this "
                f"member stopped too → exit {code}, {_REQUEUE}")
    if outcome == Outcome.HUNG:
        hang = facts.hang or {}  # what the watchdog found (free-form)
        return (f"hung: process {hang.get('pid', '?')} missed its heartbeat allowance "
                f"({_span(hang.get('allowance'))}{' while saving' if hang.get('saving') else ''}"
                f", last step {hang.get('step', '?')}), so the watchdog stopped the job → exit "
                f"{code} (--hang-exit-code; by default the requeue code)")
    if outcome in (Outcome.NOT_FOUND, Outcome.NOT_EXECUTABLE):
        command = config.command[0] if config.command else "?"
        return (f"the command {command!r} could not start "
                f"({(facts.outcome_text or '').replace('-', ' ')}) → exit {code}")
    return f"{facts.outcome_text or 'ended'} → exit {code}"


def _code_meaning(code: int | None) -> str:
    from runai_entry.core import errors

    meaning = {
        errors.EXIT_CHECKPOINT_DIR_UNAVAILABLE: "the platform should retry later; the job was "
        "not started over checkpoints it could not see",
        errors.EXIT_CRASH_LOOP: "the crash-loop guard: not the requeue code, so the job is "
        "not started again for nothing",
        errors.EXIT_INTERNAL_ERROR: "a bug in runai-entry: not the requeue code",
        errors.EXIT_USAGE: "a configuration error",
    }.get(code if code is not None else -1)
    return f" ({meaning})" if meaning else ""


def _checkpoint(checkpoint: Checkpoint | None, now: float) -> str | None:
    """``step-00000500.pt (step 500, written 2m ago)``; None when there is none."""
    if checkpoint is None:
        return None
    path, step, mtime = checkpoint
    if not path:
        return None
    about = [] if step is None else [f"step {step}"]
    if mtime is not None:
        about.append(f"written {_span(max(0.0, now - mtime))} ago")
    name = shorten(printable(os.path.basename(path.rstrip("/")) or path), MAX_NAME)
    return f"{name} ({', '.join(about)})" if about else name


def _lost(facts: AttemptRecord) -> str | None:
    """The attempt's lost work (:mod:`runai_entry.history.goodput`, as if it were the last)."""
    from runai_entry.history.goodput import attempt_figures

    if facts.started_at is None:
        return None
    lost = attempt_figures([facts])[0].lost_s
    return None if lost is None else _span(lost)


def _span(seconds: Any) -> str:
    from runai_entry.history.report import span

    return span(seconds) if isinstance(seconds, (int, float)) else "?"
