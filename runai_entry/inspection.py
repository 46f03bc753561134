"""``runai-entry --inspect --checkpoint-dir DIR``: what happened so far, and what comes next.

Read-only: it prints the attempt history, the checkpoint the next attempt would resume from and
why the others were skipped, and whether the directory is on shared storage. It runs no command
and counts no attempt. (An option rather than a subcommand, so that it can never be mistaken
for running a program called ``inspect``.)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from runai_entry import helpers
from runai_entry.bookkeeping import find_checkpoints, unanswered
from runai_entry.checkpoints import Discovery
from runai_entry.config import Config
from runai_entry.history import member_of, read_history, state_dir
from runai_entry.progress import guard_status
from runai_entry.report import render_table, verdict
from runai_entry.storage import storage_warning


def inspect(config: Config) -> int:
    """Print the report to stdout; exit 0, or raise when the directory cannot be read or does
    not answer within ``--storage-timeout`` (exit 75)."""
    from runai_entry.signals import unblock_handled_signals

    unblock_handled_signals()  # no job to guard: ^C should stop a look at a hung mount
    # ...except SIGCHLD, which is how the helper's end wakes the wait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})

    directory = config.checkpoint_dir
    assert directory is not None  # config._check requires it with --inspect

    def work(stage: Callable[[str], None]) -> tuple[Discovery, str | None, list[dict[str, Any]]]:
        stage(f"reading the checkpoints in {directory!r}")
        found = find_checkpoints(directory, config)
        stage(f"finding the filesystem of {directory!r}")
        warning = storage_warning(directory)
        stage(f"reading the attempt history in {state_dir(directory)!r}")
        return found, warning, read_history(directory) if found.exists else []

    try:
        found, warning, records = helpers.call(work, "inspect", config.storage_timeout,
                                               {signal.SIGCHLD}, lambda signum: None)
    except helpers.HelperTimeout as exc:
        raise unanswered(directory, exc) from None
    out = [f"checkpoint directory: {os.path.abspath(directory)}"]
    if not found.exists:
        out.append("  does not exist yet: the next attempt starts fresh")
    out.append(f"  storage: {warning}" if warning else "  storage: shared (network) filesystem")
    out.append("")
    if records:
        out.append(f"attempts ({len(records)}):")
        out.append(render_table(records))
        problems = verdict(records)
        out.extend(f"  ! {p}" for p in problems)
    else:
        out.append("attempts: none recorded")
    out.append(guard_status(records, member_of(os.environ), config.max_attempts_without_progress))

    out.append("")
    if found.chosen is not None:
        c = found.chosen
        step = "" if c.step is None else f", step {c.step}"
        out.append(f"next attempt resumes from: {c.path} ({c.layout}{step}; "
                   f"ordered by {found.ordered_by})")
        if config.resume_flag:
            out.append(f"  the command gets: {config.resume_flag} {c.path}")
    elif found.exists:
        out.append("next attempt starts fresh: no complete checkpoint")
    for other in found.candidates[1:]:
        out.append(f"  older complete: {other.name}")
    for skipped in found.skipped:
        out.append(f"  skipped {skipped.name}: {skipped.reason}")
    print("\n".join(out))
    return 0
