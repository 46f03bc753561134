"""What a person reads: the attempts table, the goodput line and the drill's verdict. Pure
functions of records.

A record is one attempt as the history stores it
(:class:`~runai_entry.core.attempt_record.AttemptRecord`), so the drill's table and ``--inspect``
render the same thing the same way; the figures come from :mod:`runai_entry.history.goodput`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from runai_entry.core import interval as young_daly
from runai_entry.core.attempt_record import AttemptRecord, ProcessFailure, parse_time
from runai_entry.core.outcome import OWN_PREEMPTION, PREEMPTED, Outcome
from runai_entry.core.printable import or_unknown, printable
from runai_entry.history.goodput import (
    AttemptFigures,
    Goodput,
    attempt_figures,
    checkpoint_interval,
    goodput,
    per_member,
)

#: A save that uses more than this share of the budget is one bad day away from the SIGKILL.
BUDGET_WARNING_SHARE = 0.8
#: The Checkpointer warns when its estimated stop-time save passes half the budget; so do we.
SAVE_ESTIMATE_SHARE = 0.5
#: A start-up over this share of an attempt is paid again at every requeue: worth naming...
STARTUP_WARNING_SHARE = 0.25
#: ...once it is this long: a drill's attempts are short by design (--simulate-preempt 8s), and
#: an interpreter's few seconds of imports against them say nothing about the job.
STARTUP_WARNING_FLOOR = 10.0

_COLUMNS = ("attempt", "ran for", "start-up", "productive", "lost", "stop → exit (budget)",
            "queue", "resumed from", "newest at exit", "exit")


def render_table(records: Sequence[AttemptRecord]) -> str:
    """The attempts as an aligned text table; with a member column when several pods share
    the history. Each cell is :func:`~runai_entry.core.printable.printable`: one row, one line."""
    figures = attempt_figures(records)
    rows = [_COLUMNS, *(_row(r, f) for r, f in zip(records, figures, strict=True))]
    if len({r.member for r in records}) > 1:
        rows = [("member", *_COLUMNS),
                *((printable(or_unknown(r.member)), *_row(r, f))
                  for r, f in zip(records, figures, strict=True))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _row(r: AttemptRecord, f: AttemptFigures) -> tuple[str, ...]:
    grace = r.grace_used_s
    if grace is None:
        stop = "-"
    else:
        stop = f"{r.stop_signal or 'SIGTERM'} → {grace:.1f}s ({r.stop_timeout_s or 0:g}s)"
    outcome = r.outcome_text or "?"
    if r.followed:  # whose preemption this member followed
        outcome += f" (member {r.followed_member or '?'})"
    code = r.exit_code
    return tuple(map(printable, (
        or_unknown(r.attempt),
        "-" if r.ran_for_s is None else span(r.ran_for_s),
        span(f.startup_s),
        span(f.productive_s),
        span(f.lost_s),
        stop,
        "-" if f.requeue_wait_s is None else span(f.requeue_wait_s),
        _name(r.resumed_from) or "(fresh start)",
        _name(r.newest_at_end) or "(none)",
        f"{code} {outcome}" if code is not None else outcome,
    )))


def span(seconds: float | None) -> str:
    """Seconds as a person reads them: ``?`` (unknown), ``0s``, ``2.5s``, ``48s``, ``1m``,
    ``1m 2s``, ``12m 30s``, ``2h 5m``."""
    if seconds is None:
        return "?"
    if seconds < 0.05:
        return "0s"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m {secs}s" if secs else f"{minutes}m"


def goodput_lines(records: Sequence[AttemptRecord]) -> list[str]:
    """``goodput 81% of 12m 30s: start-up 1m 10s, lost work 0s, stop 8s, waiting in the queue
    1m 2s``, then what is unknown and why, and each member's line when there are several."""
    figures = attempt_figures(records)
    job = goodput(figures)
    lines = [_goodput_line(job, figures)]
    lines += [f"  {what} ({', '.join(where)})" for what, where in job.unknown]
    members = per_member(figures)
    if len(members) > 1:
        lines += [f"  member {name}: {_goodput_line(g, [f for f in figures if f.member == name])}"
                  for name, g in members.items()]
    return lines


def _goodput_line(g: Goodput, figures: Sequence[AttemptFigures]) -> str:
    fraction = g.fraction
    # An unknown start-up or lost work counts 0, so the figure is then only a bound.
    bound = "at most " if g.unknown else ""
    head = "goodput unknown" if fraction is None \
        else f"goodput {bound}{fraction:.0%} of {span(g.wall_s)}"
    startup = _partly(g.startup_s, [f.startup_s for f in figures])
    lost = _partly(g.lost_work_s, [f.lost_s for f in figures])
    return (f"{head}: start-up {startup}, lost work {lost}, stop {span(g.stop_s)}, "
            f"waiting in the queue {span(g.requeue_wait_s)}")


def _partly(total: float, values: Sequence[float | None]) -> str:
    """``12s``; ``12s + unknown`` when some attempts' figure is unknown; ``unknown`` for all."""
    unknown = sum(value is None for value in values)
    if values and unknown == len(values):
        return "unknown"
    return f"{span(total)} + unknown" if unknown else span(total)


def incidents(records: Sequence[AttemptRecord]) -> list[str]:
    """Per attempt, the first job process that ended abnormally (the failure the rest followed
    from, torch elastic style) and the checkpoints that failed verification at its end."""
    lines = []
    for r in records:
        n = or_unknown(r.attempt)
        if r.first_failure is not None:
            lines.append(f"attempt {n}: first to end abnormally: {ended(r.first_failure)}")
        for skipped in r.skipped_at_end or ():
            lines.append(f"attempt {n}: at its end, skipped {skipped.name}: {skipped.reason}")
    return lines


def ended(failure: ProcessFailure) -> str:
    """``pid 812 (a process the command started) killed by SIGTERM at 12:00:01.250``."""
    who = "the command" if failure.command else "a process the command started"
    when = (failure.at or "")[11:23]
    return f"pid {failure.pid} ({who}) {failure.how}" + (f" at {when}" if when else "")


def saved_at_stop(r: AttemptRecord) -> bool | None:
    """Whether a preempted attempt wrote a complete checkpoint after its stop signal (by the
    checkpoints' write times); None when the record cannot tell (no stop time, or an older
    record without its checkpoints)."""
    stop_at = parse_time(r.stop_at)
    if stop_at is None or r.checkpoints is None:
        return None
    return any(c.mtime is not None and c.mtime >= stop_at for c in r.checkpoints)


def _stop_crash(r: AttemptRecord) -> str:
    """What ended the stop, when a process failed during it (the trainer's data worker killed
    under it, a traceback's exit): said with the "did not save" finding."""
    failure = r.stop_failure
    return "" if failure is None else f"; during the stop, {ended(failure)}"


def _name(path: str | None) -> str | None:
    return os.path.basename(path.rstrip("/")) if path else None


def verdict(records: Sequence[AttemptRecord]) -> list[str]:
    """The real problems the attempts show, one sentence each; empty when there are none.

    - a preemption that produced no new checkpoint (the same path, step and mtime it resumed
      from): that attempt's work was lost;
    - a preemption after which nothing was saved (every checkpoint of the attempt was written
      before its stop signal), even when a periodic save had just landed: the job does not
      save on the stop signal, and says so with what it lost, how soon it ended, and what failed
      during the stop;
    - a save that used most of its budget: the real platform may kill it mid-save;
    - an attempt killed at the deadline: the job did not finish saving in time;
    - a resume that went backwards: an attempt started from an older checkpoint than the newest
      one the previous attempt left (it ignored the resume flag, or verification rejected it);
    - a start-up (start → first heartbeat) of 10 s or more and over a quarter of a preempted
      attempt: paid at every requeue;
    - lost work over one checkpoint interval
      (:func:`~runai_entry.history.goodput.checkpoint_interval`,
      from the gaps between the checkpoints' write times): the stop-time save did not keep it;
    - a checkpoint interval more than twice or under half the Young/Daly optimum for the
      preemptions and the save cost seen (:func:`interval_advice`).
    """
    problems = _budget_findings(records)
    advice = interval_advice(records)
    if advice is not None:
        problems.append(advice.sentence())
    figures = attempt_figures(records)
    interval = checkpoint_interval(records)
    previous_newest: str | None = None
    previous_step: int | None = None
    for r, f in zip(records, figures, strict=True):
        n = or_unknown(r.attempt)
        preempted = r.outcome in OWN_PREEMPTION
        lost = span(f.lost_s if f.lost_s is not None else r.ran_for_s)
        if preempted and r.newest == r.resumed:
            problems.append(
                f"attempt {n}: preempted without writing a new checkpoint — its {lost} of work "
                f"were lost{_stop_crash(r)}"
            )
        elif preempted and saved_at_stop(r) is False:
            grace = r.grace_used_s
            ended = "" if grace is None else f", and it ended {span(grace)} after the signal"
            problems.append(
                f"attempt {n}: nothing was saved at the stop signal — the newest checkpoint "
                f"predates it, {lost} of work were lost{ended}{_stop_crash(r)}; save on the "
                "stop signal: a SIGTERM handler, the Checkpointer, the HF Trainer's "
                "enable_jit_checkpoint, Lightning's OnExceptionCheckpoint"
            )
        elif f.lost_s is not None and interval is not None and f.lost_s > interval:
            problems.append(
                f"attempt {n}: {span(f.lost_s)} of work lost, more than one checkpoint interval "
                f"({span(interval)}) — nothing was saved at the stop signal: save on it "
                "(Checkpointer does), or checkpoint more often"
            )
        # Only an attempt the platform cut short shows what a requeue costs: a last attempt
        # that finishes soon after its resume is mostly start-up, and rightly so.
        stopped = r.outcome in PREEMPTED
        if stopped and f.startup_s is not None and f.startup_s >= STARTUP_WARNING_FLOOR \
                and f.startup_s > STARTUP_WARNING_SHARE * f.ran_for_s:
            problems.append(
                f"attempt {n}: start-up took {span(f.startup_s)} of its {span(f.ran_for_s)} "
                f"({f.startup_s / f.ran_for_s:.0%}) before the first step — imports, CUDA and "
                "NCCL set-up and the restore are paid again at every requeue"
            )
        if r.outcome == Outcome.KILLED_AT_DEADLINE:
            problems.append(
                f"attempt {n}: still running at the deadline and SIGKILLed — the save did not "
                f"finish within {r.stop_timeout_s or 0:g}s (save sooner on the stop signal, "
                "or raise --grace-period with terminationGracePeriodSeconds)"
            )
        elif preempted and r.grace_used_s is not None and r.stop_timeout_s:
            share = r.grace_used_s / r.stop_timeout_s
            if share > BUDGET_WARNING_SHARE:
                problems.append(
                    f"attempt {n}: the save took {r.grace_used_s:.1f}s of the "
                    f"{r.stop_timeout_s:g}s budget ({share:.0%}) — a slower disk will get it "
                    "killed mid-save"
                )
        step = r.resumed_step
        went_back = previous_newest is not None and r.resumed_from != previous_newest and (
            step is None or previous_step is None or step < previous_step
        )
        if went_back:
            problems.append(
                f"attempt {n}: resumed from {_name(r.resumed_from) or 'nothing'} although "
                f"{_name(previous_newest)} was newer — the resume went backwards"
            )
        previous_newest = r.newest_at_end
        previous_step = r.newest_step
    return problems + torn_findings(records)


def torn_findings(records: Sequence[AttemptRecord]) -> list[str]:
    """Starts over a checkpoint a kill cut during its save in place
    (:mod:`runai_entry.supervisor.keptcopy`): from scratch, its work lost, or from runai-entry's
    copy."""
    lines = []
    for r in records:
        n = or_unknown(r.attempt)
        torn = r.fresh_over_torn or ()
        if torn:
            lines.append(
                f"attempt {n}: started from scratch over {', '.join(t.name for t in torn)}, "
                f"which cannot be resumed from ({torn[0].reason}) and of which no verified "
                "copy was kept — the work it held was lost; save atomically (a temporary file, "
                "then os.replace), or refuse such a start: --refuse-fresh-start (exit 75)")
        if r.kept_copy_of:
            lines.append(
                f"attempt {n}: resumed from runai-entry's kept copy of {r.kept_copy_of}, "
                "which a kill cut during a save in place — what was saved after the copy was "
                "made is lost; save atomically (a temporary file, then os.replace)")
    return lines


def _budget_findings(records: Sequence[AttemptRecord]) -> list[str]:
    """The Checkpointer's own measure of a stop-time save against the budget, said once."""
    for r in records:
        figures = r.save_estimate
        if figures is None:
            continue
        share = figures.share or 0.0
        if share > SAVE_ESTIMATE_SHARE:
            return [
                f"attempt {or_unknown(r.attempt)}: the Checkpointer measured a save of "
                f"{(figures.bytes or 0) / 1e9:.2f} GB in {figures.seconds or 0:.1f}s: "
                f"a save at the stop signal would take {figures.estimate_s or 0:.1f}s, "
                f"{share:.0%} of the {figures.budget_s or 0:g}s budget — raise "
                "--grace-period with terminationGracePeriodSeconds (Run:ai: "
                "--termination-grace-period)"
            ]
    return []


class IntervalAdvice(NamedTuple):
    """The interval seen against the Young/Daly optimum (:mod:`runai_entry.core.interval`)
    for the preemptions and the save cost the history holds."""

    interval_s: float
    best_s: float
    mean_between_s: float
    preemptions: int
    save_s: float

    def sentence(self) -> str:
        """``checkpoint interval: you checkpoint every 1h; with a preemption every ~3h (2 seen)
        and a 40s save, every ~15m would lose ~7m 30s per preemption instead of ~30m``."""
        seen = (f"checkpoint interval: you checkpoint every {span(self.interval_s)}; with a "
                f"preemption every ~{_about(self.mean_between_s)} ({self.preemptions} seen) and "
                f"a {span(self.save_s)} save, every ~{_about(self.best_s)} would ")
        if self.interval_s > self.best_s:
            return (f"{seen}lose ~{_about(young_daly.lost_per_preemption(self.best_s))} per "
                    f"preemption instead of "
                    f"~{_about(young_daly.lost_per_preemption(self.interval_s))} (Young/Daly; "
                    "a stop saved nothing, so the periodic saves are what a preemption keeps)")
        return (f"{seen}spend {young_daly.save_share(self.save_s, self.best_s):.0%} of the run "
                f"saving instead of {young_daly.save_share(self.save_s, self.interval_s):.0%} "
                "(Young/Daly: checkpoint less often)")

    def as_dict(self) -> dict[str, Any]:
        """For ``--inspect --json`` (seconds to the millisecond)."""
        return {"interval_s": round(self.interval_s, 3), "optimum_s": round(self.best_s, 3),
                "mean_between_preemptions_s": round(self.mean_between_s, 3),
                "preemptions": self.preemptions, "save_s": round(self.save_s, 3),
                "sentence": self.sentence()}


def _about(seconds: float) -> str:
    """An estimate as a person says it: to the minute from 2 minutes on."""
    return span(round(seconds / 60) * 60.0 if seconds >= 120 else seconds)


def interval_advice(records: Sequence[AttemptRecord]) -> IntervalAdvice | None:
    """The advice, when the interval seen is more than twice or under half the optimum; None
    when it is near it or a figure is missing: the interval (two periodic checkpoints in an
    attempt), a preemption, or the save cost, which only the Checkpointer measures (no cost is
    assumed: a guess would make the advice a guess).

    Too often is said only when the saves take at least 5% of the run (MATERIAL_SHARE). Too
    rarely is said only when some preemption saved nothing at its stop signal: while the
    stop-time save keeps the work, a rarer periodic save loses nothing to a preemption.
    """
    seen = checkpoint_interval(records)
    rate = young_daly.preemption_rate(records)
    save = young_daly.latest_save_cost(records)
    between = rate.mean_between_s
    if seen is None or between is None or save is None:
        return None
    best = young_daly.optimum(save, between)
    if not young_daly.far_from(seen, best):
        return None
    if seen > best and not any(saved_at_stop(r) is False for r in records
                               if r.outcome in PREEMPTED):
        return None
    if seen < best and young_daly.save_share(save, seen) < young_daly.MATERIAL_SHARE:
        return None
    return IntervalAdvice(seen, best, between, rate.preemptions, save)
