"""GPU checkpoint saves against the disk: issue 9's table, in one run of at most 5 minutes.

Needs one CUDA GPU with room for the state (default: 0.94B parameters + Adam = 11.3 GB) and as
much free host memory twice over. Measured on the same disk (``--dir``, default /tmp), each save
after ``sync`` with the previous files deleted untimed:

* the disk: ``dd if=/dev/zero bs=64M oflag=direct`` of the state's size;
* copy of the whole state GPU → pinned host memory (the bus);
* 0.1.0's ``save_training_state`` from the GPU (torch.save: a ``.cpu()`` per tensor in the pickler);
* the Checkpointer's blocking save, as at the stop signal (device→host copies into a reused
  pinned buffer overlapped with O_DIRECT writes);
* the Checkpointer's async save: the seconds ``step()`` holds the training thread, then the
  background write's total.

    python bench/gpu_save.py                 # about 3 minutes on an H100/H200 host
    python bench/gpu_save.py --params 2e8    # a smaller state
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import common

GB = 1e9


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--params", type=float, default=0.94e9)
    p.add_argument("--dir", default="/tmp")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu_save.py needs a CUDA GPU; none is visible here", file=sys.stderr)
        return 2
    from runai_entry.training import tensorfile
    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.stop import StopFlag
    from runai_entry.training.torch import save_training_state

    report = common.Report("checkpointer save (GPU)", args)
    reps = 1 if args.quick else 2
    directory = common.temp_dir("gpu", args.dir)
    print(f"{torch.cuda.get_device_name()}; {common.machine_load()}", flush=True)
    layers = 16
    width = int((args.params / layers) ** 0.5)
    model = torch.nn.Sequential(
        *(torch.nn.Linear(width, width, bias=False) for _ in range(layers))).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    ckpt = Checkpointer(directory, keep=1000, every_steps=1, flag=StopFlag(signals=[]))
    ckpt.restore(model=model, optimizer=optimizer)
    nbytes = tensorfile.plan(ckpt._state(0, [ckpt._mine()])).total_bytes
    print(f"state: {args.params / 1e9:.2f}B parameters + Adam = {nbytes / GB:.2f} GB", flush=True)

    def clear() -> None:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.sync()

    def timed(action: object) -> float:
        clear()
        torch.cuda.synchronize()
        started = time.perf_counter()
        action()  # type: ignore[operator]
        torch.cuda.synchronize()
        return time.perf_counter() - started

    count = -(-nbytes // (64 << 20))
    dd = [count * (64 << 20) / timed(lambda: subprocess.run(
        ["dd", "if=/dev/zero", f"of={directory}/dd.bin", "bs=64M", f"count={count}",
         "oflag=direct"], check=True, capture_output=True)) / GB for _ in range(reps)]
    disk = statistics.median(dd)
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
    clear()
    stall, total = statistics.median(stalls), statistics.median(totals)
    rows = [
        ("disk: dd oflag=direct", f"{disk:.2f} GB/s", ""),
        ("copy GPU → pinned host", f"{bus:.2f} s ({nbytes / GB / bus:.0f} GB/s)", ""),
        ("save_training_state (0.1.0) from GPU", f"{old:.1f} s ({nbytes / GB / old:.2f} GB/s)",
         f"{nbytes / GB / old / disk:.2f}x the disk"),
        ("Checkpointer blocking (stop-time) save", f"{ours:.1f} s ({nbytes / GB / ours:.2f} GB/s)",
         f"{nbytes / GB / ours / disk:.2f}x the disk (target ≥ 0.8x)"),
        ("Checkpointer async: training-thread stall", f"{stall:.2f} s",
         f"target ≤ 0.5 s; write done after {total:.1f} s"),
    ]
    print()
    for name, value, verdict in rows:
        print(f"| {name} | {value} | {verdict} |")
        report.row(name, {"runai-entry": value, "reference": f"dd oflag=direct {disk:.2f} GB/s",
                          "ratio": verdict}, "", None)
    report.note(common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, common.REPO)
    with common.session():
        sys.exit(main())
