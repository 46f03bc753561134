"""The supervisor's state machine: the table in State's docstring is the one the loop enforces."""

from __future__ import annotations

import itertools
import re

import pytest

from runai_entry.supervisor.loop import TRANSITIONS, State, transition


def documented() -> set[tuple[State, State]]:
    """The transitions State's docstring lists, ``any`` expanded."""
    pairs = set()
    for old, new in re.findall(r"^\s*(\w+)\s+→\s+(\w+)", State.__doc__ or "", re.MULTILINE):
        sources = [s for s in State if s.name != new] if old == "any" else [State[old]]
        pairs |= {(source, State[new]) for source in sources}
    return pairs


def test_the_table_is_the_docstring() -> None:
    """Every transition the loop allows is documented, and every documented one is allowed."""
    allowed = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert allowed == documented()


@pytest.mark.parametrize(("old", "new"), list(itertools.product(State, State)),
                         ids=lambda s: s.value)
def test_transition_allows_exactly_the_table(old: State, new: State) -> None:
    if (old, new) in documented():
        assert transition(old, new) is new
    else:
        with pytest.raises(RuntimeError, match=f"{old.value} → {new.value}"):
            transition(old, new)


def test_exited_is_final_and_every_state_can_end() -> None:
    assert TRANSITIONS[State.EXITED] == frozenset()
    assert all(State.EXITED in TRANSITIONS[s] for s in State if s is not State.EXITED)
