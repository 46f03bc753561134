"""torchrun worker (1 or 2 ranks, gloo): DCP checkpoints of DTensor states saved in one world
size and loaded in another, in the raw layout (runai_entry.training._io.dcpio) and torch's own.

``save DIR``: the state below, sharded on dim 0 (7 rows: uneven over 2 ranks), saved twice:
``DIR/raw-<world>`` by :func:`save_sharded` from an :class:`AlignedStaging` copy (the O_DIRECT
path of an async save) and ``DIR/torch-<world>`` by torch's plain ``dcp.save`` (the layout of
every checkpoint written before the raw one).
``load DIR NAME...``: each checkpoint into a fresh state sharded on dim 1 (each saved chunk is
then cut, through a temporary tensor) and, where the world size is the saver's, on dim 0 (read
straight into the destination); every rank prints ``rank R NAME PLACEMENT equal=True|False``.
``sharded DIR`` (2 ranks): a ShardedTensor (FSDP1 without a device mesh), staged and saved twice
under one name, loads back; prints ``rank R ShardedTensor equal=True|False``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor

from runai_entry.training._io.dcpio import AlignedStaging
from runai_entry.training.dcp import load_sharded, save_sharded
from tests.training_scripts.leave_group import exit_now


def full() -> dict[str, Any]:
    g = torch.Generator().manual_seed(7)
    return {"w": torch.randn(7, 6, generator=g),
            "h": torch.randn(7, 3, generator=g).to(torch.bfloat16),
            "step": torch.tensor(42, dtype=torch.int64),
            "meta": {"epoch": 3, "names": ["a", "b"]}}


def sharded(values: dict[str, Any], placement: Placement) -> dict[str, Any]:
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    out: dict[str, Any] = {k: distribute_tensor(values[k], mesh, [placement]) for k in "wh"}
    out["step"] = distribute_tensor(values["step"], mesh, [Replicate()])
    out["meta"] = values["meta"]
    return out


def zeros(values: dict[str, Any]) -> dict[str, Any]:
    return {"w": torch.zeros_like(values["w"]), "h": torch.zeros_like(values["h"]),
            "step": torch.zeros_like(values["step"]), "meta": {"epoch": 0, "names": []}}


def equal(loaded: dict[str, Any], expected: dict[str, Any]) -> bool:
    def whole(t: torch.Tensor) -> torch.Tensor:
        return t.full_tensor() if isinstance(t, DTensor) else t

    return (all(torch.equal(whole(loaded[k]), expected[k]) for k in ("w", "h", "step"))
            and loaded["meta"] == expected["meta"])


def say(text: str) -> None:
    os.write(1, f"rank {dist.get_rank()} {text}\n".encode())  # one write: ranks share the pipe


def main(mode: str, directory: str, names: list[str]) -> None:
    world = dist.get_world_size()
    expected = full()
    if mode == "save":
        state = sharded(expected, Shard(0))
        staging = AlignedStaging()
        save_sharded(os.path.join(directory, f"raw-{world}"), staging.stage(state),
                     staging=staging)
        dcp_save(sharded(expected, Shard(0)), checkpoint_id=os.path.join(directory,
                                                                        f"torch-{world}"))
        say("saved")
    elif mode == "sharded":
        from torch.distributed._shard import sharded_tensor
        from torch.distributed._shard.sharding_spec import ChunkShardingSpec

        spec = ChunkShardingSpec(dim=0, placements=["rank:0/cpu", "rank:1/cpu"])
        saved = {"st": sharded_tensor.rand(spec, 8, 4), "w": expected["w"]}
        staging = AlignedStaging()
        for _ in range(2):
            save_sharded(os.path.join(directory, "sharded"), staging.stage(saved),
                         staging=staging)
        into = {"st": sharded_tensor.zeros(spec, 8, 4), "w": torch.zeros_like(expected["w"])}
        load_sharded(os.path.join(directory, "sharded"), into)
        same = torch.equal(into["st"].local_shards()[0].tensor,
                           saved["st"].local_shards()[0].tensor)
        say(f"ShardedTensor equal={same and torch.equal(into['w'], expected['w'])}")
    else:
        for name in names:
            saved_world = int(name.rsplit("-", 1)[1])
            for placement in [Shard(1)] + ([Shard(0)] if saved_world == world else []):
                state = sharded(zeros(expected), placement)
                load_sharded(os.path.join(directory, name), state)
                say(f"{name} {placement} equal={equal(state, expected)}")


if __name__ == "__main__":
    dist.init_process_group("gloo")
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    dist.barrier()
    dist.destroy_process_group()
    exit_now(0)
