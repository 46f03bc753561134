"""examples/train_ddp.py under torchrun under runai-entry: one node with two workers, and two
"nodes" (two runai-entry processes on loopback sharing one checkpoint directory).

torchrun starts each worker in a session of its own: these tests fail if the stop signal or the
wait does not reach the workers (the checkpoint would be missing, or torn, or the exit code
would not be 1), if the ranks do not stop at the same step, or if the resume is not exact."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.jobs import (
    FINISHED,
    RESUMED,
    STOPPED,
    TORCHRUN,
    example,
    free_port,
    preempted_then_finished,
    reference_weights,
    seeded_rng,
    started,
    stop_at_random_step,
    under_entry,
)

EPOCHS = 4
STEPS = EPOCHS * 44  # 1,438 images, 719 per rank, batches of 16
SCRIPT_ARGS = [example("train_ddp.py"), "--epochs", str(EPOCHS), "--width", "16",
               "--save-every", "25", "--verbose"]
ONE_NODE = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
            *SCRIPT_ARGS]


def node(rank: int, port: int) -> list[str]:
    """One of two single-worker nodes; the world is the same two ranks as ONE_NODE's."""
    return [*TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(port), "--max-restarts", "0",
            *SCRIPT_ARGS]


@pytest.mark.slow
def test_torchrun_two_workers_preempted_twice_ends_bit_identical(tmp_path: Path) -> None:
    expected = reference_weights(ONE_NODE, tmp_path / "reference")
    finished = preempted_then_finished(tmp_path / "ckpt", ONE_NODE, seeded_rng("train_ddp"), 2,
                                       training=r"^training: .* on 2 ranks")
    assert finished.group(1) == str(STEPS)
    assert finished.group(2) == expected
    assert finished.string.endswith(" on all 2 ranks")


@pytest.mark.slow
def test_two_nodes_preempted_together_resume_the_same_step(tmp_path: Path) -> None:
    rng = seeded_rng("two_nodes")
    expected = reference_weights(ONE_NODE, tmp_path / "reference")
    ckpt = tmp_path / "shared-ckpt"
    port = free_port()  # the same on every attempt: a requeued PyTorchJob keeps its master port
    resume_at = 0
    for attempt in (1, 2):
        with started(under_entry(ckpt, node(0, port))) as node0, \
                started(under_entry(ckpt, node(1, port))) as node1:
            for n in (node0, node1):
                chosen = n.expect(r'"event": "(resuming|starting_fresh)"[,}]')
                event = n.events(chosen.group(1))[-1]
                if attempt > 1:
                    assert event["step"] == resume_at, n.tail()
            if attempt > 1:
                resumed = node0.expect(RESUMED)
                assert int(resumed.group(2)) == resume_at
            node0.expect(r"^training: .* on 2 ranks")
            if attempt == 1:
                seen = stop_at_random_step(node0, rng, 0, spread=60)
                node1.signal(signal.SIGTERM)  # both pods get the kubelet's SIGTERM together
                saved = node0.expect(STOPPED)
                assert node0.wait() == 1, node0.tail()
                assert node1.wait() == 1, node1.tail()
                for n in (node0, node1):
                    assert n.events("exit")[-1]["reason"] == "preempted", n.tail()
                assert int(saved.group(2)) >= seen
                resume_at = int(saved.group(2))
            else:
                assert node0.wait() == 0, node0.tail()
                assert node1.wait() == 0, node1.tail()
                finished = node0.matches(FINISHED)
                assert finished, node0.tail()
                rank1 = node1.expect(r"^rank 1 finished: weights sha256 ([0-9a-f]{64})$")
    assert finished[-1].group(2) == rank1.group(1) == expected
