"""Checkpointer restore on CPU against the disk and against a memcpy of the state.

The state is issue 18's: 8 x 4096² Linear (no bias) + Adam's two moments, 1.61 GB, saved once
by the Checkpointer into a directory beside the repository (the same disk as /tmp). Each round,
in a fresh random order:

* ``dd if=<the checkpoint> of=/dev/null bs=64M iflag=direct``: the disk's read speed;
* ``Checkpointer.restore`` with the page cache dropped (``posix_fadvise(DONTNEED)`` on the file,
  after an fsync, so other processes' caches stay): a requeued job on a fresh node;
* ``tensorfile.load`` without ``into`` (fresh tensors), cold: what a tool reading a checkpoint
  gets;
* ``Checkpointer.restore`` with the file in the page cache (read once, buffered, untimed), against
  a plain memcpy of the state (``copy_`` of every tensor into tensors already allocated): the
  least a restore from memory can cost.

Every restore goes into the same live model and optimizer (a resumed job's), so the restore's
reads land in memory already touched, as they do in a job that built its model first.

    .venv/bin/python bench/checkpointer_restore.py            # 5 rounds, about 1 minute
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import common

GB = 1e9


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--dir", default="/tmp", help="where the checkpoint goes (the disk measured)")
    args = p.parse_args()
    report = common.Report("checkpointer restore (CPU)", args)
    import torch

    from runai_entry.training._io import tensorfile
    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.stop import StopFlag

    rounds = 2 if args.quick else 5
    directory = common.temp_dir("restore", args.dir)
    print(common.machine_load(), flush=True)

    def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = torch.nn.Sequential(*(torch.nn.Linear(args.width, args.width, bias=False)
                                      for _ in range(args.layers)))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for param in model.parameters():
            param.grad = torch.randn_like(param)
        optimizer.step()  # creates both moments
        return model, optimizer

    model, optimizer = build()
    saver = Checkpointer(directory, keep=1, every_steps=1, flag=StopFlag(signals=[]))
    saver.restore(model=model, optimizer=optimizer)
    saver.step(1)
    path = os.path.join(directory, os.listdir(directory)[0])
    nbytes = os.path.getsize(path)
    print(f"checkpoint: {path}, {nbytes / GB:.2f} GB", flush=True)
    expected = [t.clone() for t in model.state_dict().values()]
    live_model, live_optimizer = build()  # other values: a restore must overwrite them

    def drop_cache() -> None:
        common.drop_cache(path)

    def warm_cache() -> None:
        with open(path, "rb", buffering=0) as f:
            while f.read(64 << 20):
                pass

    def restore() -> None:
        ckpt = Checkpointer(directory, keep=1, flag=StopFlag(signals=[]))
        assert ckpt.restore(model=live_model, optimizer=live_optimizer) == 1

    tensors = list(model.state_dict().values()) + [
        t for s in optimizer.state.values() for t in s.values() if t.numel() > 1]
    copies = [torch.empty_like(t) for t in tensors]
    for c in copies:
        c.fill_(1.0)  # touched: the memcpy pays no page faults, as the restore into a live model

    def memcpy() -> None:
        for c, t in zip(copies, tensors, strict=True):
            c.copy_(t)

    def dd() -> None:
        subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=64M", "iflag=direct"],
                       check=True, capture_output=True)

    actions = {
        "dd iflag=direct": (drop_cache, dd),
        "restore, cold": (drop_cache, restore),
        "tensorfile.load, no into, cold": (drop_cache, lambda: tensorfile.load(path)),
        "restore, warm": (warm_cache, restore),
        "memcpy of the state": (warm_cache, memcpy),
    }
    seconds: dict[str, list[float]] = {label: [] for label in actions}
    for _, label in common.interleaved(actions, rounds):
        prepare, action = actions[label]
        prepare()
        started = time.perf_counter()
        action()
        seconds[label].append(time.perf_counter() - started)
    restored = list(live_model.state_dict().values())
    assert all(torch.equal(a, b) for a, b in zip(restored, expected, strict=True)), "bad restore"
    stats = common.print_stats("restore, 1.6 GB state", "s", seconds, baseline="dd iflag=direct")
    med = {label: s["median"] for label, s in stats.items()}
    speed = {label: nbytes / GB / m for label, m in med.items()}
    for label in med:
        print(f"  {label:<34} {med[label]:.3f} s  {speed[label]:.2f} GB/s")
    cold = speed["restore, cold"] / speed["dd iflag=direct"]
    warm = med["restore, warm"] / med["memcpy of the state"]
    report.row("1.6 GB: restore, cold cache, vs dd iflag=direct",
               {"runai-entry": f"{med['restore, cold']:.2f} s, "
                               f"{speed['restore, cold']:.2f} GB/s",
                "reference": f"dd iflag=direct {speed['dd iflag=direct']:.2f} GB/s; "
                             f"tensorfile.load without into "
                             f"{speed['tensorfile.load, no into, cold']:.2f} GB/s",
                "ratio": f"{cold:.2f}x"}, "≥ 0.8×", "pass" if cold >= 0.8 else "FAIL")
    report.row("1.6 GB: restore, warm cache, vs a memcpy of the state",
               {"runai-entry": f"{med['restore, warm']:.3f} s",
                "reference": f"memcpy {med['memcpy of the state']:.3f} s",
                "ratio": f"{warm:.2f}x"}, "≤ 2×", "pass" if warm <= 2 else "FAIL")
    report.note(common.machine_load())
    report.print_markdown()
    report.write()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, common.REPO)
    with common.session():
        sys.exit(main())
