"""GPU checkpoints against the disk: issue 18's GPU table, in one run of at most 5 minutes.

Needs one CUDA GPU with room for the state (default: 0.94B parameters + Adam = 11.3 GB) and as
much free host memory twice over. Measured on the same disk (``--dir``, default /tmp), each save
after ``sync`` with the previous files deleted untimed:

* the disk: ``dd if=/dev/zero bs=64M oflag=direct`` of the state's size, and
  ``dd of=/dev/null bs=64M iflag=direct`` of the checkpoint;
* copy of the whole state GPU → pinned host memory (the bus);
* 0.1.0's ``save_training_state`` from the GPU (torch.save: a ``.cpu()`` per tensor in the pickler);
* the Checkpointer's blocking save, as at the stop signal (device→host copies into a reused
  pinned buffer overlapped with O_DIRECT writes): target ≥ 0.8x the disk;
* the Checkpointer's async save: the seconds ``step()`` holds the training thread (target
  ≤ 0.5 s), then the background write's total; and inside a training loop of the same model
  (forward, backward, Adam), with the copy taken on the training stream against behind it on a
  side stream (``background_copy=True``): the thread held, and the loop time lost;
* ``Checkpointer.restore`` into the live GPU model and optimizer with the page cache dropped
  (O_DIRECT reads into pinned bounce buffers, host→device copies overlapped with the next reads),
  against ``dd iflag=direct``: target ≥ 0.8x;
* training steps/s of the same model in a one-rank process group, with the ranks' agreement every
  step (``agree_every=1``, the default) against almost never: target ≥ 0.99x.

    python bench/gpu_save.py                          # about 3 minutes on an H100/H200 host
    python bench/gpu_save.py --size-gb 2              # a smaller state
    python bench/gpu_save.py --device cpu --size-gb 0.2   # the script's logic, on a CPU
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import common

GB = 1e9


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=11.3,
                   help="the state's size: float32 parameters + Adam's two moments")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--dir", default="/tmp")
    args = p.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_save.py needs a CUDA GPU and none is visible here "
              "(--device cpu runs its logic on the CPU)", file=sys.stderr)
        return 2
    import torch.distributed as dist

    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.legacy import save_training_state
    from runai_entry.training.stop import StopFlag

    cuda = args.device == "cuda"
    report = common.Report(f"checkpointer save and restore ({args.device})", args)
    reps = 1 if args.quick else 2
    directory = common.temp_dir("gpu", args.dir)
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"{name}; {common.machine_load()}", flush=True)
    layers = 16
    width = int((args.size_gb * GB / 12 / layers) ** 0.5)
    model = torch.nn.Sequential(
        *(torch.nn.Linear(width, width, bias=False) for _ in range(layers))).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    flag = StopFlag(signals=[])
    ckpt = Checkpointer(directory, keep=1000, every_steps=1, flag=flag)
    ckpt.restore(model=model, optimizer=optimizer)
    ckpt.save(0)  # what a save writes, sized by a save
    nbytes = ckpt.last_bytes
    print(f"state: {layers} x {width}² + Adam = {nbytes / GB:.2f} GB", flush=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def clear() -> None:
        for entry in os.listdir(directory):
            os.unlink(os.path.join(directory, entry))
        os.sync()

    def timed(action: Callable[[], object], prepare: Callable[[], None] = clear) -> float:
        prepare()
        sync()
        started = time.perf_counter()
        action()
        sync()
        return time.perf_counter() - started

    count = -(-nbytes // (64 << 20))
    dd_write = statistics.median(count * (64 << 20) / timed(lambda: subprocess.run(
        ["dd", "if=/dev/zero", f"of={directory}/dd.bin", "bs=64M", f"count={count}",
         "oflag=direct"], check=True, capture_output=True)) / GB for _ in range(reps))
    rows: list[tuple[str, str, str]] = [("disk: dd oflag=direct", f"{dd_write:.2f} GB/s", "")]
    if cuda:
        pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        tensors = [t for t in list(model.parameters())
                   + [s for st in optimizer.state.values() for s in st.values()
                      if isinstance(s, torch.Tensor) and s.is_cuda]]

        def to_host() -> None:
            offset = 0
            for t in tensors:
                n = t.numel() * t.element_size()
                pinned[offset:offset + n].view(t.dtype).view(t.shape).copy_(t, non_blocking=True)
                offset += n

        bus = statistics.median(timed(to_host) for _ in range(reps))
        pinned.set_()  # frees the buffer: the Checkpointer pins its own
        rows.append(("copy GPU → pinned host", f"{bus:.2f} s ({nbytes / GB / bus:.0f} GB/s)", ""))
    old = statistics.median(timed(lambda: save_training_state(
        os.path.join(directory, "old.pt"), model=model, optimizer=optimizer, step=1))
        for _ in range(reps))
    step = 0

    def blocking() -> None:
        nonlocal step
        step += 1
        ckpt.step(step)

    ours = statistics.median(timed(blocking) for _ in range(reps + 1))  # first: allocation
    ckpt.async_save = True
    stalls, totals = [], []
    for _ in range(reps + 1):
        clear()
        step += 1
        started = time.perf_counter()
        ckpt.step(step)
        stalls.append(time.perf_counter() - started)
        ckpt.close()
        totals.append(time.perf_counter() - started)
    stall, total = statistics.median(stalls), statistics.median(totals)
    rows += [
        ("save_training_state (0.1.0)", f"{old:.1f} s ({nbytes / GB / old:.2f} GB/s)",
         f"{nbytes / GB / old / dd_write:.2f}x the disk"),
        ("Checkpointer blocking (stop-time) save", f"{ours:.1f} s ({nbytes / GB / ours:.2f} GB/s)",
         f"{nbytes / GB / ours / dd_write:.2f}x the disk (target ≥ 0.8x)"),
        ("Checkpointer async: training-thread stall", f"{stall:.2f} s",
         f"target ≤ 0.5 s; write done after {total:.1f} s"),
    ]

    # -- restore ------------------------------------------------------------------------------
    path = os.path.join(directory, sorted(os.listdir(directory))[-1])

    def drop_cache() -> None:
        common.drop_cache(path)

    def restore() -> None:
        Checkpointer(directory, keep=1000, flag=flag).restore(model=model, optimizer=optimizer)

    dd_read = statistics.median(os.path.getsize(path) / timed(lambda: subprocess.run(
        ["dd", f"if={path}", "of=/dev/null", "bs=64M", "iflag=direct"], check=True,
        capture_output=True), drop_cache) / GB for _ in range(reps))
    back = statistics.median(timed(restore, drop_cache) for _ in range(reps))
    rows += [("disk: dd iflag=direct", f"{dd_read:.2f} GB/s", ""),
             ("Checkpointer.restore, cold cache", f"{back:.1f} s ({nbytes / GB / back:.2f} GB/s)",
              f"{nbytes / GB / back / dd_read:.2f}x the disk (target ≥ 0.8x)")]
    clear()

    # -- the async save inside a training loop: copy here, copy behind (side stream) -----------
    from checkpointer_save import loop_rows

    rows += loop_rows(report, model, optimizer, directory, reps + 1, ours, step,
                      batch=torch.randn(64, width, device=args.device), sync=sync)
    for sub in ("copy-here", "copy-behind"):
        shutil.rmtree(os.path.join(directory, sub))

    # -- the agreement's cost to training -----------------------------------------------------
    dist.init_process_group("nccl" if cuda else "gloo", init_method="tcp://127.0.0.1:"
                            f"{29400 + os.getpid() % 1000}", rank=0, world_size=1)
    batch = torch.randn(64, width, device=args.device)

    def steps_per_second(agree_every: int, seconds: float = 10.0 if cuda else 2.0) -> float:
        loop = Checkpointer(directory, agree_every=agree_every, flag=flag)
        loop.restore(model=model, optimizer=optimizer, path=None)
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model(batch).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            n += 1
            loop.step(n)
        sync()
        return n / (time.perf_counter() - started)

    steps_per_second(1, 1.0)  # warm-up: kernels, allocator
    rates: dict[str, list[float]] = {"agree every step": [], "agree almost never": []}
    for _ in range(reps):
        rates["agree every step"].append(steps_per_second(1))
        rates["agree almost never"].append(steps_per_second(10**9))
    dist.destroy_process_group()
    on, off = (statistics.median(v) for v in rates.values())
    rows.append(("training steps/s, agreement every step vs almost never",
                 f"{on:.1f} vs {off:.1f} steps/s", f"{on / off:.3f}x (target ≥ 0.99x)"))
    print()
    for label, value, verdict in rows:
        print(f"| {label} | {value} | {verdict} |")
        report.row(label, {"runai-entry": value, "reference": f"dd oflag=direct {dd_write:.2f} "
                           f"GB/s", "ratio": verdict}, "", None)
    report.note(common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, common.REPO)
    with common.session():
        sys.exit(main())
