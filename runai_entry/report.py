"""What a person reads: the attempts table and the drill's verdict. Pure functions of records.

A record is one attempt as the history stores it (a dict: see
:func:`runai_entry.bookkeeping.base_record`), so the drill's table and ``--inspect`` render the same
thing the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from runai_entry.progress import checkpoint_identity

#: A save that uses more than this share of the budget is one bad day away from the SIGKILL.
BUDGET_WARNING_SHARE = 0.8
#: The Checkpointer warns when its estimated stop-time save passes half the budget; so do we.
SAVE_ESTIMATE_SHARE = 0.5

_COLUMNS = ("attempt", "ran for", "stop → exit (budget)", "resumed from", "newest at exit", "exit")


def render_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The attempts as an aligned text table; with a member column when several pods share
    the history."""
    rows = [_COLUMNS, *(_row(r) for r in records)]
    if len({r.get("member") for r in records}) > 1:
        rows = [("member", *_COLUMNS), *((str(r.get("member", "?")), *_row(r)) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _row(r: Mapping[str, Any]) -> tuple[str, ...]:
    grace = r.get("grace_used_s")
    if grace is None:
        stop = "-"
    else:
        stop = f"{r.get('stop_signal', 'SIGTERM')} → {grace:.1f}s ({r.get('stop_timeout_s', 0):g}s)"
    outcome = r.get("outcome", "?")
    if r.get("followed"):  # whose preemption this member followed
        outcome += f" (member {r['followed'].get('member', '?')})"
    code = r.get("exit_code")
    return (
        str(r.get("attempt", "?")),
        "-" if r.get("ran_for_s") is None else f"{r['ran_for_s']:.1f}s",
        stop,
        _name(r.get("resumed_from")) or "(fresh start)",
        _name(r.get("newest_at_end")) or "(none)",
        f"{code} {outcome}" if code is not None else outcome,
    )


def _name(path: str | None) -> str | None:
    return os.path.basename(path.rstrip("/")) if path else None


def verdict(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The real problems the attempts show, one sentence each; empty when there are none.

    - a preemption that produced no new checkpoint (the same path, step and mtime it resumed
      from): that attempt's work was lost;
    - a save that used most of its budget: the real platform may kill it mid-save;
    - an attempt killed at the deadline: the job did not finish saving in time;
    - a resume that went backwards: an attempt started from an older checkpoint than the newest
      one the previous attempt left (it ignored the resume flag, or verification rejected it).
    """
    problems = _budget_findings(records)
    previous_newest: str | None = None
    previous_step: int | None = None
    for r in records:
        n = r.get("attempt", "?")
        preempted = r.get("outcome") in ("preempted", "killed-at-deadline")
        if preempted and checkpoint_identity(r, "newest") == checkpoint_identity(r, "resumed"):
            problems.append(
                f"attempt {n}: preempted without writing a new checkpoint — its "
                f"{_seconds(r.get('ran_for_s'))} of work were lost"
            )
        if r.get("outcome") == "killed-at-deadline":
            problems.append(
                f"attempt {n}: still running at the deadline and SIGKILLed — the save did not "
                f"finish within {r.get('stop_timeout_s', 0):g}s (save sooner on the stop signal, "
                "or raise --grace-period with terminationGracePeriodSeconds)"
            )
        elif preempted and r.get("grace_used_s") is not None and r.get("stop_timeout_s"):
            share = r["grace_used_s"] / r["stop_timeout_s"]
            if share > BUDGET_WARNING_SHARE:
                problems.append(
                    f"attempt {n}: the save took {r['grace_used_s']:.1f}s of the "
                    f"{r['stop_timeout_s']:g}s budget ({share:.0%}) — a slower disk will get it "
                    "killed mid-save"
                )
        step = r.get("resumed_step")
        went_back = previous_newest is not None and r.get("resumed_from") != previous_newest and (
            step is None or previous_step is None or step < previous_step
        )
        if went_back:
            problems.append(
                f"attempt {n}: resumed from {_name(r.get('resumed_from')) or 'nothing'} although "
                f"{_name(previous_newest)} was newer — the resume went backwards"
            )
        previous_newest = r.get("newest_at_end")
        previous_step = r.get("newest_step")
    return problems


def _budget_findings(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The Checkpointer's own measure of a stop-time save against the budget, said once."""
    for r in records:
        figures = r.get("save_estimate")
        if isinstance(figures, Mapping) and figures.get("share", 0) > SAVE_ESTIMATE_SHARE:
            return [
                f"attempt {r.get('attempt', '?')}: the Checkpointer measured a save of "
                f"{figures.get('bytes', 0) / 1e9:.2f} GB in {figures.get('seconds', 0):.1f}s: "
                f"a save at the stop signal would take {figures.get('estimate_s', 0):.1f}s, "
                f"{figures['share']:.0%} of the {figures.get('budget_s', 0):g}s budget — raise "
                "--grace-period with terminationGracePeriodSeconds (Run:ai: "
                "--termination-grace-period)"
            ]
    return []


def _seconds(value: Any) -> str:
    return "?" if value is None else f"{value:.1f}s"
