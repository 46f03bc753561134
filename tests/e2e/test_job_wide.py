"""Two loopback "nodes" of one torchrun job, each under its own runai-entry, sharing one
checkpoint directory; the platform preempts only node 0 (a drained node), as Kubernetes does.

Both runai-entry processes must exit with the preempt code, whether the trainer's ranks agree
to stop (and exit 0, as many scripts do) or each rank acts alone (node 1's rank then dies in a
collective, or stops on the signal its runai-entry forwards). The requeued job then resumes
from node 0's checkpoint and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.e2e.jobs import REPO, TORCHRUN, free_port, job_env, started, under_entry

SCRIPT = str(REPO / "tests" / "training_scripts" / "ddp_steps.py")
STEP = re.compile(r"^rank 0 step (\d+)$")
FINISHED = re.compile(r"^rank (\d) finished: step (\d+) weights sha256 ([0-9a-f]{64})$")


def node(rank: int, port: int, ckpt: Path, *script_args: str) -> list[str]:
    return under_entry(ckpt, [
        *TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
        "--master-addr", "127.0.0.1", "--master-port", str(port), "--max-restarts", "0",
        SCRIPT, "--ckpt-dir", str(ckpt), *script_args])


def run_to_the_end(ckpt: Path, port: int, *script_args: str) -> str:
    """Both nodes until they exit 0 on their own; the final weights' sha256 (equal on both)."""
    with started(node(0, port, ckpt, *script_args), job_env(POD_INDEX="0")) as node0, \
            started(node(1, port, ckpt, *script_args), job_env(POD_INDEX="1")) as node1:
        assert node0.wait() == 0, node0.tail()
        assert node1.wait() == 0, node1.tail()
        for n in (node0, node1):
            assert n.events("exit")[-1]["reason"] == "completed", n.tail()
        hashes = {m.group(3) for n in (node0, node1) for m in n.matches(FINISHED)}
    assert len(hashes) == 1, hashes
    return hashes.pop()


@pytest.mark.slow
@pytest.mark.parametrize("agree", [True, False], ids=["ranks-agree", "no-rank-agreement"])
def test_one_node_preempted_stops_both_and_the_rerun_ends_identical(tmp_path: Path,
                                                                    agree: bool) -> None:
    args = ("--agree",) if agree else ()
    port = free_port()  # the same on every attempt: a requeued PyTorchJob keeps its master port
    # An uninterrupted run on both nodes completes and exits 0 on both.
    expected = run_to_the_end(tmp_path / "reference", port, *args)

    ckpt = tmp_path / "shared-ckpt"
    with started(node(0, port, ckpt, *args), job_env(POD_INDEX="0")) as node0, \
            started(node(1, port, ckpt, *args), job_env(POD_INDEX="1")) as node1:
        while int(node0.expect(STEP).group(1)) < 15:
            pass
        node0.signal(signal.SIGTERM)  # node 0 only: node 1 hears of it through the directory
        assert node0.wait() == 1, node0.tail()
        assert node1.wait() == 1, node1.tail()
        assert node0.events("exit")[-1]["reason"] == "preempted", node0.tail()
        assert node1.events("exit")[-1]["reason"] == "followed-peer", node1.tail()
    saved = sorted(p.name for p in ckpt.glob("step-*.pt"))
    assert saved, "node 0 saved no checkpoint"

    assert run_to_the_end(ckpt, port, *args) == expected
