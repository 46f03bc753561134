"""Does a checkpoint save fit in the stop budget? Measured save by save, said once.

runai-entry gives the job ``RUNAI_ENTRY_STOP_TIMEOUT`` seconds between the stop signal and
SIGKILL. A state that takes longer than that to save is lost at every preemption, and the user
learns it only after the first one; the figures to see it coming are there at the first periodic
save. Standard library only: the Checkpointer feeds it bytes and seconds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from runai_entry.core import envvars
from runai_entry.core.atomicfile import atomic_write_bytes

#: Above this share of the budget, the stop-time save is at risk (the loop must also finish its
#: step, and every rank must reach the save) — warn.
WARN_SHARE = 0.5


@dataclass
class SaveBudget:
    """The stop budget and the speed saves were measured at."""

    #: Seconds from the stop signal to SIGKILL; None when runai-entry did not say.
    timeout: float | None
    bytes_per_second: float | None = None
    last_bytes: int = 0
    last_seconds: float = 0.0
    #: Seconds the last save held the training thread: all of it, or an async save's copy.
    last_stall: float = 0.0
    warned: bool = False

    def record(self, nbytes: int, seconds: float, stall: float | None = None) -> None:
        """One save's size, the seconds a blocking save of it took (copy + write + fsync), and
        those it held the training thread (``stall``; default: all of them)."""
        self.last_bytes, self.last_seconds = nbytes, seconds
        self.last_stall = seconds if stall is None else stall
        if seconds > 0:
            self.bytes_per_second = nbytes / seconds

    def estimate(self, nbytes: int | None = None) -> float | None:
        """Seconds a blocking save of ``nbytes`` (default: the last save's size) would take."""
        if self.bytes_per_second is None:
            return None
        return (self.last_bytes if nbytes is None else nbytes) / self.bytes_per_second

    def first_warning(self) -> str | None:
        """The one-time warning when a stop-time save would use more than half the budget."""
        estimate, rate = self.estimate(), self.bytes_per_second
        if self.warned or estimate is None or rate is None or not self.timeout:
            return None
        self.warned = True
        if estimate <= WARN_SHARE * self.timeout:
            return None
        return (
            f"checkpoint budget: a save of {self.last_bytes / 1e9:.2f} GB took "
            f"{self.last_seconds:.1f} s ({rate / 1e9:.2f} GB/s), so a save at "
            f"the stop signal would use {estimate / self.timeout:.0%} of the {self.timeout:g} s "
            f"stop budget (RUNAI_ENTRY_STOP_TIMEOUT); raise runai-entry's --grace-period "
            f"together with the pod's terminationGracePeriodSeconds (Run:ai: "
            f"--termination-grace-period)"
        )

    def figures(self) -> dict[str, float] | None:
        """The last save's figures and the stop-time estimate, for runai-entry's history."""
        estimate = self.estimate()
        if estimate is None or not self.timeout:
            return None
        return {"bytes": self.last_bytes, "seconds": round(self.last_seconds, 3),
                "stall_s": round(self.last_stall, 3),
                "estimate_s": round(estimate, 3), "budget_s": self.timeout,
                "share": round(estimate / self.timeout, 3)}

    def publish(self, directory: str) -> None:
        """Leave the figures where runai-entry keeps them in the attempt history (and the drill's
        verdict names them): ``<directory>/.runai-entry/save-estimate.json``."""
        figures = self.figures()
        if figures is None:
            return
        state = os.path.join(directory, envvars.STATE_DIR)
        os.makedirs(state, exist_ok=True)
        atomic_write_bytes(os.path.join(state, envvars.SAVE_ESTIMATE_FILE),
                           json.dumps(figures).encode())

    def stop_line(self, nbytes: int, time_left: float | None) -> str | None:
        """At the stop signal: the one line saying the save may not finish before SIGKILL."""
        estimate = self.estimate(nbytes)
        if estimate is None or time_left is None or estimate <= time_left:
            return None
        return (
            f"checkpoint budget: saving anyway although the estimate ({estimate:.1f} s for "
            f"{nbytes / 1e9:.2f} GB) exceeds the {time_left:.1f} s left before SIGKILL; the save "
            f"is atomic, so a kill mid-write keeps the previous checkpoint"
        )
