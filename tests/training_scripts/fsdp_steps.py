"""torchrun worker: an FSDP2 (``fully_shard``) model on CPU with gloo, saved by the Checkpointer
with ``backend="dcp"`` (by default asynchronously), for the preemption drill and the SIGKILL
tests.

Each step's batch depends only on (step, rank), and nothing else draws randomness, so a run
resumed from a checkpoint ends with the same weights as an uninterrupted one. Rank 0 prints
``start <step>`` after restore(), ``step N`` per step, ``stopped at step N`` after a stop-time
save, ``published N`` when it saw a background write published, and at the end ``finished: step
N weights sha256 H`` over the full (gathered) state dict. One write per line: ranks share a pipe.

``--fail-after N``: once step N is published, rank 0 may write no file over 64 KiB
(RLIMIT_FSIZE: a real EFBIG mid-write, like a full disk); each rank then prints ``rank R raised
<type>: <message>`` and exits 3.
"""

from __future__ import annotations

from runai_entry.training import preemption

FLAG = preemption()  # before torch's import: a SIGTERM during start-up is a stop, not a death

import argparse  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions,
    get_model_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

from runai_entry.training import Checkpointer  # noqa: E402
from runai_entry.training.errors import CheckpointError  # noqa: E402
from tests.training_scripts.leave_group import exit_now, leave_group  # noqa: E402


def build(width: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.Tanh(),
                                torch.nn.Linear(width, width), torch.nn.Tanh(),
                                torch.nn.Linear(width, 1))
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def full_sha256(model: torch.nn.Module) -> str:
    """Collective: the full state dict, gathered from the shards, hashed on every rank."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 broadcast_from_rank0=False))
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--blocking", action="store_true")
    parser.add_argument("--forever", action="store_true", help="until killed: no last step")
    parser.add_argument("--fail-after", type=int)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    def say(text: str) -> None:
        if rank == 0:
            os.write(1, f"{text}\n".encode())

    model, optimizer = build(args.width)
    ckpt = Checkpointer(args.ckpt_dir, keep=2, every_steps=args.every, backend="dcp",
                        async_save=not args.blocking, flag=FLAG)
    step = ckpt.restore(model=model, optimizer=optimizer)
    say(f"start {step}")
    try:
        step = loop(args, ckpt, model, optimizer, step, say)
    except CheckpointError as exc:
        os.write(1, f"rank {rank} raised {type(exc).__name__}: {exc}\n".encode())
        dist.barrier()  # every rank raised at the same agreement: none exits before both said so
        return 3
    if ckpt.exit_code:
        say(f"stopped at step {step}")
    else:
        say(f"finished: step {step} weights sha256 {full_sha256(model)}")
    # The Checkpointer is still alive here, as a module-level one in a user's script would be.
    os.write(1, f"rank {rank} groups_alive {leave_group()}\n".encode())
    return ckpt.exit_code


def loop(args: argparse.Namespace, ckpt: Checkpointer, model: torch.nn.Module,
         optimizer: torch.optim.Optimizer, step: int, say: Callable[[str], None]) -> int:
    rank = dist.get_rank()
    seen = ckpt.published
    while step < args.steps or args.forever:
        gen = torch.Generator().manual_seed(step * 1000 + rank)
        x = torch.randn(32, 16, generator=gen)
        loss = ((model(x) - x.sum(dim=1, keepdim=True).tanh()) ** 2).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        say(f"step {step} loss {loss.item():.6f}")
        if ckpt.step(step, last=step == args.steps and not args.forever):
            break
        if ckpt.published != seen:
            seen = ckpt.published
            say(f"published {seen}")
        if args.fail_after is not None and ckpt.published == args.fail_after:
            if rank == 0:  # the "disk" fills up under the next write
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
                resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
            args.fail_after = None
        time.sleep(args.step_delay)
    return step


if __name__ == "__main__":
    exit_now(main())
