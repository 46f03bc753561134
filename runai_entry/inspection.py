"""`--inspect`: what happened so far in a checkpoint directory, and what comes next.

Read-only: it prints the attempt history with what each attempt cost
(:mod:`runai_entry.history.goodput`), the checkpoint the next attempt would resume from and why the
others were skipped, and whether the directory is on shared storage; with ``--json`` as one object,
and with ``--timeline`` as a picture too. It runs no command and counts no attempt. (An option
rather than a subcommand, so that it can never be mistaken for running a program called
``inspect``.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from runai_entry.checkpoints import Discovery
from runai_entry.config.loading import Config
from runai_entry.config.resumeflag import resume_args
from runai_entry.core.attempt_record import AttemptRecord
from runai_entry.core.printable import printable, printable_value
from runai_entry.history.crashloop import guard_status
from runai_entry.history.goodput import attempt_figures, checkpoint_interval, goodput, per_member
from runai_entry.history.report import (
    goodput_lines,
    incidents,
    interval_advice,
    render_table,
    verdict,
)
from runai_entry.history.store import member_of, read_history, state_dir
from runai_entry.supervisor import storage_io
from runai_entry.supervisor.before_and_after import find_checkpoints, unanswered
from runai_entry.supervisor.mount import storage_warning

#: What ``--inspect --json`` copies from each history record beside the figures (null where
#: the record does not know).
_FROM_THE_RECORD = ("exit_code", "started_at", "ended_at", "stop_at", "first_step_at",
                    "last_step", "last_step_at", "resumed_from", "resumed_step", "newest_at_end",
                    "newest_step", "first_failure", "stop_failure", "skipped_at_end")


def inspect(config: Config) -> int:
    """Print the report to stdout; exit 0, or raise when the directory cannot be read or does
    not answer within ``--storage-timeout`` (exit 75)."""
    from runai_entry.core.signals import unblock_handled_signals

    unblock_handled_signals()  # no job to guard: ^C should stop a look at a hung mount
    # ...except SIGCHLD, which is how the helper's end wakes the wait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})

    directory = config.checkpoint_dir
    assert directory is not None  # config._check requires it with --inspect

    def work(stage: Callable[[str], None]) -> tuple[Discovery, str | None, list[AttemptRecord]]:
        stage(f"reading the checkpoints in {directory!r}")
        found = find_checkpoints(directory, config)
        stage(f"finding the filesystem of {directory!r}")
        warning = storage_warning(directory)
        stage(f"reading the attempt history in {state_dir(directory)!r}")
        return found, warning, read_history(directory) if found.exists else []

    try:
        found, warning, records = storage_io.call(work, "inspect", config.storage_timeout,
                                                  {signal.SIGCHLD}, lambda signum: None)
    except storage_io.HelperTimeout as exc:
        raise unanswered(directory, exc) from None
    # Names come from a shared directory: a control character in one must not act on the
    # terminal, nor a byte that is not UTF-8 stop a strict stdout (printable, in both forms).
    if config.json:
        # allow_nan=False: NaN is not JSON. The records are checked as they are read, so
        # every figure is finite; were one not, this fails loudly rather than print non-JSON.
        _show(json.dumps(printable_value(as_json(directory, found, warning, records)),
                         ensure_ascii=False, default=str, allow_nan=False))
    else:
        _show("\n".join(map(printable, _text(config, directory, found, warning, records))))
    if config.timeline is not None:
        from runai_entry.history.timeline import write_timeline

        write_timeline(config.timeline, records, title=f"runai-entry: {directory}")
    return 0


def _show(report: str) -> None:
    """The report on stdout; a reader that left early (``| head``) had what it wanted."""
    try:
        print(report, flush=True)
    except BrokenPipeError:
        # Later writes to the dead pipe (the interpreter's own flush) would fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def as_json(directory: str, found: Discovery, warning: str | None,
            records: list[AttemptRecord]) -> dict[str, Any]:
    """The one object ``--inspect --json`` prints (its schema is in README.md)."""
    figures = attempt_figures(records)
    attempts = []
    for r, f in zip(records, figures, strict=True):
        item = f.as_dict()
        line = r.to_json()  # the fields as the history holds them
        item.update({key: line.get(key) for key in _FROM_THE_RECORD})
        attempts.append(item)
    chosen = found.chosen
    advice = interval_advice(records)
    return {
        "checkpoint_dir": os.path.abspath(directory),
        "exists": found.exists,
        "storage_warning": warning,
        "attempts": attempts,
        "goodput": goodput(figures).as_dict(),
        "members": {name: g.as_dict() for name, g in per_member(figures).items()},
        "checkpoint_interval_s": checkpoint_interval(records),
        "interval_advice": None if advice is None else advice.as_dict(),
        "problems": verdict(records),
        "next": None if chosen is None else {
            "path": chosen.path, "layout": chosen.layout, "step": chosen.step,
            "mtime": chosen.mtime, "ordered_by": found.ordered_by},
        "skipped": [{"name": s.name, "reason": s.reason} for s in found.skipped],
    }


def _command_gets(config: Config, path: str) -> str:
    """What the next attempt's argv gets, made as the start makes it. --inspect is a command of
    its own: the job's --resume-flag reaches it only through the same variable or file."""
    import shlex

    args = resume_args(config.resume_flag, path)
    shown = shlex.join(args) if args else "no argument (only RUNAI_ENTRY_RESUME_FROM)"
    origin = "" if config.resume_flag != Config._field_defaults["resume_flag"] else (
        " (the default --resume-flag: give --inspect the job's own to see what it gets)")
    return f"  the command gets: {shown}{origin}"


def _text(config: Config, directory: str, found: Discovery, warning: str | None,
          records: list[AttemptRecord]) -> list[str]:
    out = [f"checkpoint directory: {os.path.abspath(directory)}"]
    if not found.exists:
        out.append("  does not exist yet: the next attempt starts fresh")
    out.append(f"  storage: {warning}" if warning else "  storage: shared (network) filesystem")
    out.append("")
    if records:
        out.append(f"attempts ({len(records)}):")
        out.extend(render_table(records).split("\n"))  # one line per row: cells are escaped
        out.extend(goodput_lines(records))
        out.extend(f"  {line}" for line in incidents(records))
        out.extend(f"  ! {p}" for p in verdict(records))
    else:
        out.append("attempts: none recorded")
    out.append(guard_status(records, member_of(os.environ), config.max_attempts_without_progress))

    out.append("")
    if found.chosen is not None:
        c = found.chosen
        step = "" if c.step is None else f", step {c.step}"
        out.append(f"next attempt resumes from: {c.path} ({c.layout}{step}; "
                   f"ordered by {found.ordered_by})")
        out.append(_command_gets(config, c.path))
    elif found.exists:
        out.append("next attempt starts fresh: no complete checkpoint")
    for other in found.candidates[1:]:
        out.append(f"  older complete: {other.name}")
    for skipped in found.skipped:
        out.append(f"  skipped {skipped.name}: {skipped.reason}")
    if found.gave_up:
        out.append(f"  search stopped after {found.search_stopped}; {found.gave_up} older "
                   "entries not examined: the next attempt stops with exit 75")
    return out
