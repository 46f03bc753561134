"""``runai-entry --inspect --checkpoint-dir DIR``: what happened so far, and what comes next.

Read-only: it prints the attempt history, the checkpoint the next attempt would resume from and
why the others were skipped, and whether the directory is on shared storage. It runs no command
and counts no attempt. (An option rather than a subcommand, so that it can never be mistaken
for running a program called ``inspect``.)
"""

from __future__ import annotations

import os

from runai_entry.attempt import DISCOVERY_TIMEOUT
from runai_entry.checkpoints import discover
from runai_entry.config import Config
from runai_entry.report import render_table, verdict


def inspect(config: Config) -> int:
    """Print the report to stdout; exit 0, or raise when the directory cannot be read."""
    from runai_entry.history import read_history
    from runai_entry.signals import unblock_handled_signals
    from runai_entry.storage import storage_warning

    unblock_handled_signals()  # no job to guard: ^C should stop a look at a hung mount

    directory = config.checkpoint_dir
    assert directory is not None  # config._check requires it with --inspect
    found = discover(directory, pattern=config.checkpoint_glob,
                     verify=config.verify_checkpoints, timeout=DISCOVERY_TIMEOUT)
    out = [f"checkpoint directory: {os.path.abspath(directory)}"]
    if not found.exists:
        out.append("  does not exist yet: the next attempt starts fresh")
    warning = storage_warning(directory)
    out.append(f"  storage: {warning}" if warning else "  storage: shared (network) filesystem")

    records = read_history(directory) if found.exists else []
    out.append("")
    if records:
        out.append(f"attempts ({len(records)}):")
        out.append(render_table(records))
        problems = verdict(records)
        out.extend(f"  ! {p}" for p in problems)
    else:
        out.append("attempts: none recorded")

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
