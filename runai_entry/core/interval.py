"""How often to checkpoint: the Young/Daly optimum, from what the attempt history measured.

A periodic checkpoint costs its save (the training thread's stall: for an async save only the
copy) every interval; a preemption that the stop-time save does not rescue costs the work since
the last one, half an interval on average. The interval that wastes least balances the two:

    Young (1974), "A first order approximation to the optimum checkpoint interval",
    Communications of the ACM 17(9):530-531:    tau = sqrt(2 * delta * M)

    Daly (2006), "A higher order estimate of the optimum checkpoint interval for restart
    dumps", Future Generation Computer Systems 22(3):303-312, eq. (37):
        tau = sqrt(2 delta M) * (1 + sqrt(delta / 2M) / 3 + (delta / 2M) / 9) - delta
              for delta < 2M, and tau = M otherwise

with ``delta`` the save cost and ``M`` the mean time between interruptions. ``M`` comes from
the history: the attempts' run time over their preemptions (the queue between attempts is not
exposed to preemption). Both the supervisor's advice (``--inspect``, the drill's verdict) and
``Checkpointer(every_seconds="auto")`` use these functions, so they cannot disagree. Standard
library only, and pure: the training library imports it, and records come in checked by the
one parser both sides read the history with
(:meth:`~runai_entry.core.attempt_record.AttemptRecord.from_json`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from runai_entry.core.attempt_record import AttemptRecord, SaveEstimate
from runai_entry.core.outcome import PREEMPTED

#: How far the interval may be from the optimum before it is worth a word: the waste curve is
#: flat near its bottom (twice or half the optimum wastes about 25% more than the optimum).
FAR = 2.0
#: The least a save is taken to cost, in seconds (see :func:`save_cost`).
MIN_SAVE_S = 0.001


class Rate(NamedTuple):
    """What the history says of preemptions: run time, how many, and the mean between them."""

    run_s: float
    preemptions: int

    @property
    def mean_between_s(self) -> float | None:
        """Seconds of running between two preemptions; None before the first one."""
        return self.run_s / self.preemptions if self.preemptions else None


def optimum(save_s: float, mean_between_s: float) -> float:
    """Daly's optimum interval (Young's, refined) in seconds, for a save of ``save_s`` and a
    preemption every ``mean_between_s`` seconds of running. Both must be positive."""
    if not (save_s > 0 and mean_between_s > 0) or math.isinf(save_s + mean_between_s):
        raise ValueError(f"save cost and mean time between preemptions must be positive and "
                         f"finite, not {save_s!r} and {mean_between_s!r}")
    if save_s >= 2 * mean_between_s:
        return mean_between_s
    ratio = save_s / (2 * mean_between_s)
    return math.sqrt(2 * save_s * mean_between_s) * (
        1 + math.sqrt(ratio) / 3 + ratio / 9) - save_s


#: Saving too often is worth a word only when the saves take at least this share of the run: a
#: fast save every few steps (a drill's, a small model's) costs nothing worth changing.
MATERIAL_SHARE = 0.05


def young(save_s: float, mean_between_s: float) -> float:
    """Young's first-order optimum, sqrt(2 * save * M): what a person checks by hand."""
    return math.sqrt(2 * save_s * mean_between_s)


def lost_per_preemption(interval_s: float) -> float:
    """Work a preemption costs on average when nothing is saved at the stop: half an interval."""
    return interval_s / 2


def save_share(save_s: float, interval_s: float) -> float:
    """The share of the run the periodic saves take."""
    return save_s / (interval_s + save_s)


def far_from(interval_s: float, best_s: float) -> bool:
    """Whether ``interval_s`` is more than :data:`FAR` times off ``best_s``, either way."""
    return interval_s > FAR * best_s or interval_s * FAR < best_s


def preemption_rate(records: Iterable[AttemptRecord]) -> Rate:
    """Run time and preemptions over every attempt of the history (all members: members that
    are preempted together count together, and the mean between them stays the job's). The
    outcomes counted are :data:`~runai_entry.core.outcome.PREEMPTED`."""
    run, count = 0.0, 0
    for record in records:
        run += record.ran_for_s or 0.0
        if record.outcome in PREEMPTED:
            count += 1
    return Rate(run, count)


def save_cost(estimate: SaveEstimate | None) -> float | None:
    """The seconds a periodic save holds the training thread, from a record's ``save_estimate``
    (the Checkpointer's measure): its stall (an async save costs only its copy), else the
    whole save; None when neither is known."""
    if estimate is None:
        return None
    value = estimate.stall_s if estimate.stall_s is not None else estimate.seconds
    if value is None:
        return None
    # Rounded to the millisecond when written: a save never costs nothing (the call, the
    # ranks' agreement), and the formula needs a cost above 0.
    return max(value, MIN_SAVE_S)


def latest_save_cost(records: Iterable[AttemptRecord]) -> float | None:
    """The newest save cost the history holds (see :func:`save_cost`)."""
    found = None
    for record in records:
        cost = save_cost(record.save_estimate)
        if cost is not None:
            found = cost
    return found


def clamp(seconds: float, bounds: tuple[float, float]) -> float:
    return min(max(seconds, bounds[0]), bounds[1])
