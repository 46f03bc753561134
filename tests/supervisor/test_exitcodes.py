"""The exit-code policy, as a table."""

from __future__ import annotations

import pytest

from runai_entry.supervisor.exitcodes import Outcome, decide, spawn_failure


class TestDecide:
    @pytest.mark.parametrize(
        ("returncode", "preempted", "escalated", "expected"),
        [
            (0, False, False, (0, Outcome.COMPLETED)),
            (3, False, False, (3, Outcome.FAILED)),
            (255, False, False, (255, Outcome.FAILED)),
            (-9, False, False, (137, Outcome.FAILED)),
            (-11, False, False, (139, Outcome.FAILED)),
            (-15, False, False, (143, Outcome.FAILED)),
            # Preempted: requeue whatever the job returned.
            (0, True, False, (1, Outcome.PREEMPTED)),
            (143, True, False, (1, Outcome.PREEMPTED)),
            (-15, True, False, (1, Outcome.PREEMPTED)),
            (2, True, False, (1, Outcome.PREEMPTED)),
            (-9, True, True, (1, Outcome.KILLED_AT_DEADLINE)),
            (None, True, True, (1, Outcome.KILLED_AT_DEADLINE)),
        ],
    )
    def test_table(self, returncode: int | None, preempted: bool, escalated: bool,
                   expected: tuple[int, Outcome]) -> None:
        """Each way a job can end maps to one exit code and outcome."""
        assert decide(returncode, preempted=preempted, escalated=escalated,
                      preempt_exit_code=1) == expected

    @pytest.mark.parametrize(
        ("returncode", "preempted", "escalated", "expected"),
        [
            # The command ended by itself while a peer was preempting: agreed stop, or a
            # collective that failed when the peer's ranks left. Requeue either way.
            (0, False, False, (1, Outcome.FOLLOWED_PEER)),
            (3, False, False, (1, Outcome.FOLLOWED_PEER)),
            (-6, False, False, (1, Outcome.FOLLOWED_PEER)),
            # runai-entry stopped the job because the peer was preempted.
            (0, True, False, (1, Outcome.FOLLOWED_PEER)),
            (-15, True, False, (1, Outcome.FOLLOWED_PEER)),
            # The deadline is the graver news, and what the verdict must name.
            (-9, True, True, (1, Outcome.KILLED_AT_DEADLINE)),
        ],
    )
    def test_followed_peer(self, returncode: int | None, preempted: bool, escalated: bool,
                           expected: tuple[int, Outcome]) -> None:
        """A peer's preemption makes this member's end a preemption too."""
        assert decide(returncode, preempted=preempted, escalated=escalated,
                      preempt_exit_code=1, followed_peer=True) == expected

    @pytest.mark.parametrize(("returncode", "preempted", "escalated"), [
        (-15, False, False),  # stopped by the watchdog's stop signal
        (-9, False, True),  # SIGKILLed at the end of the hang grace
        (0, True, False),  # a real preemption came while the stacks were being dumped
    ])
    def test_hung(self, returncode: int | None, preempted: bool, escalated: bool) -> None:
        """A hang is the news whatever followed; its code is --hang-exit-code or the preempt
        code."""
        assert decide(returncode, preempted=preempted, escalated=escalated, preempt_exit_code=1,
                      hung=True) == (1, Outcome.HUNG)
        assert decide(returncode, preempted=preempted, escalated=escalated, preempt_exit_code=1,
                      hung=True, hang_exit_code=3) == (3, Outcome.HUNG)

    def test_custom_preempt_code(self) -> None:
        """--preempt-exit-code replaces 1 on preemption, and only then."""
        assert decide(0, preempted=True, escalated=False, preempt_exit_code=42)[0] == 42
        assert decide(0, preempted=False, escalated=False, preempt_exit_code=42)[0] == 0

    def test_unknown_status_without_preemption_is_a_bug(self) -> None:
        """A missing status outside a preemption is refused rather than guessed."""
        with pytest.raises(ValueError):
            decide(None, preempted=False, escalated=False, preempt_exit_code=1)


class TestSpawnFailure:
    def test_shell_codes(self) -> None:
        """Not found is 127 and not executable is 126, as in the shell."""
        assert spawn_failure(not_found=True) == (127, Outcome.NOT_FOUND)
        assert spawn_failure(not_found=False) == (126, Outcome.NOT_EXECUTABLE)
