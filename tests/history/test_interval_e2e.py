"""The interval advice under the drill: a job that checkpoints too rarely for the preemptions
it rehearses is told so, with the figures, by the verdict and by --inspect --json."""

from __future__ import annotations

from pathlib import Path

from tests.history.test_goodput_e2e import JOB, drill


def test_a_job_that_checkpoints_too_rarely_is_told_how_often_to(entry, tmp_path: Path) -> None:
    """Saves every second (10 steps), a preemption every ~5 s of running, a 1 ms save: the
    optimum is ~0.1 s, so every second is too rare, and nothing is saved at the stop."""
    lines, shown = drill(entry, tmp_path, *JOB, "--save-estimate", "0.001")
    advice = shown["interval_advice"]
    assert advice is not None, shown["problems"]
    assert advice["preemptions"] == 1 and advice["save_s"] == 0.001
    assert 0.8 < advice["interval_s"] < 1.5, advice
    assert advice["optimum_s"] < advice["interval_s"] / 2
    said = [p for p in shown["problems"] if p.startswith("checkpoint interval: ")]
    assert said == [advice["sentence"]], shown["problems"]
    assert "you checkpoint every 1." in said[0] and "would lose ~" in said[0]
    assert any("checkpoint interval: you checkpoint every" in line for line in lines), lines


def test_no_advice_without_a_measured_save_cost(entry, tmp_path: Path) -> None:
    """The same job without the Checkpointer's figures: no cost is assumed, nothing advised."""
    _, shown = drill(entry, tmp_path, *JOB)
    assert shown["interval_advice"] is None
    assert not [p for p in shown["problems"] if p.startswith("checkpoint interval")]
