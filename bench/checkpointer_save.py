"""Checkpointer saves on CPU: throughput against the disk, async stall, training during a write.

The state is 134M float32 parameters plus Adam's two moments (1.6 GB, issue 9's CPU figure),
in /tmp beside the repository (the same disk). Measured, each repetition after ``sync`` and with
the previous files deleted untimed:

* the disk: ``dd if=/dev/zero bs=64M oflag=direct`` of the same size (issue 9's reference),
  ``dd conv=fsync`` (buffered + fsync), and raw ``O_DIRECT`` 64 MiB writes + fsync from one
  page-aligned buffer already filled with random bytes: the ceiling, since dd reads each block
  from /dev/zero before it writes it, one after the other, and so understates the disk;
* a blocking save through ``Checkpointer.step`` (tensorfile: temp file, large writes, fsync,
  rename, directory fsync), and 0.1.0's ``save_training_state`` (torch.save) for comparison;
* an async save: the seconds ``step()`` holds the training thread (the host copy), against the
  blocking save; and inside a training loop of the same model, copy here against copy behind
  (``background_copy=True``): the thread held and the loop time lost (:func:`loop_rows`);
* training throughput while a background write runs: a small MLP trained on one torch thread
  (the other core is the writer's), steps/s with no save, during the Checkpointer's writer thread,
  during the same write from a forked process (which is how the thread was chosen), and during a
  ``dd oflag=direct`` of as many bytes: what the disk's writes alone cost the training.
"""

from __future__ import annotations

import mmap
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import common

GB = 1e9


def main() -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--params", type=int, default=134_000_000)
    args = p.parse_args()
    report = common.Report("checkpointer save (CPU)", args)
    import torch

    from runai_entry.training._io import tensorfile
    from runai_entry.training._io.staging import Staging
    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.legacy import save_training_state
    from runai_entry.training.stop import StopFlag

    reps = 2 if args.quick else 5
    directory = common.temp_dir("ckpt", "/tmp")
    print(common.machine_load(), flush=True)

    layers = 8
    width = int((args.params / layers) ** 0.5)
    model = torch.nn.Sequential(*(torch.nn.Linear(width, width, bias=False) for _ in range(layers)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()  # creates both moments
    ckpt = Checkpointer(directory, keep=1000, every_steps=1, flag=StopFlag(signals=[]))
    ckpt.restore(model=model, optimizer=optimizer)
    ckpt.save(0)  # what a save writes, sized by a save
    nbytes = ckpt.last_bytes
    print(f"state: {sum(t.numel() for t in model.parameters()) / 1e6:.0f}M parameters + Adam = "
          f"{nbytes / GB:.2f} GB", flush=True)

    def clear() -> None:
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if os.path.isfile(path):  # not loop_rows' directories
                os.unlink(path)
        os.sync()

    def dd(flags: str) -> float:
        count = -(-nbytes // (64 << 20))
        clear()
        started = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={directory}/dd.bin", "bs=64M",
                        f"count={count}", flags], check=True, capture_output=True)
        return count * (64 << 20) / (time.perf_counter() - started) / GB

    block = os.urandom(1 << 20)
    filled = mmap.mmap(-1, -(-nbytes // (64 << 20)) * (64 << 20))
    for offset in range(0, len(filled), 1 << 20):
        filled[offset:offset + (1 << 20)] = block

    def raw_direct() -> float:
        clear()
        started = time.perf_counter()
        fd = os.open(f"{directory}/raw.bin", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
        try:
            view = memoryview(filled)
            for offset in range(0, len(filled), 64 << 20):
                os.write(fd, view[offset:offset + (64 << 20)])
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(filled) / (time.perf_counter() - started) / GB

    series: dict[str, list[float]] = {"dd oflag=direct": [], "dd conv=fsync": [],
                                      "raw O_DIRECT writes": [],
                                      "Checkpointer (blocking)": [],
                                      "save_training_state (0.1.0)": []}
    stalls: list[float] = []
    step = 0
    for _ in range(reps):
        series["dd oflag=direct"].append(dd("oflag=direct"))
        series["dd conv=fsync"].append(dd("conv=fsync"))
        series["raw O_DIRECT writes"].append(raw_direct())
        clear()
        step += 1
        started = time.perf_counter()
        ckpt.step(step)
        series["Checkpointer (blocking)"].append(nbytes / (time.perf_counter() - started) / GB)
        clear()
        started = time.perf_counter()
        save_training_state(os.path.join(directory, "old.pt"), model=model, optimizer=optimizer,
                            step=step)
        series["save_training_state (0.1.0)"].append(
            nbytes / (time.perf_counter() - started) / GB)
    clear()
    ckpt.async_save = True
    for _ in range(reps):
        step += 1
        started = time.perf_counter()
        ckpt.step(step)
        stalls.append(time.perf_counter() - started)
        ckpt.close()
        clear()
    stats = common.print_stats("save throughput", "GB/s", series, baseline="dd oflag=direct")
    disk = stats["dd oflag=direct"]["median"]
    ours = stats["Checkpointer (blocking)"]["median"]
    old = stats["save_training_state (0.1.0)"]["median"]
    raw = stats["raw O_DIRECT writes"]["median"]
    report.row("1.6 GB: blocking save throughput vs dd oflag=direct",
               {"runai-entry": f"{ours:.2f} GB/s", "reference":
                f"dd oflag=direct {disk:.2f} GB/s, raw O_DIRECT {raw:.2f} GB/s, dd conv=fsync "
                f"{stats['dd conv=fsync']['median']:.2f} GB/s, 0.1.0 {old:.2f} GB/s",
                "ratio": f"{ours / disk:.2f}x dd, {ours / raw:.2f}x raw O_DIRECT "
                         f"(0.1.0: {old / disk:.2f}x dd)"},
               "≥ 0.9×", "pass" if ours / disk >= 0.9 else "FAIL")
    sync_seconds = nbytes / GB / ours
    stall = statistics.median(stalls)
    print(f"\nasync stall: median {stall * 1000:.0f} ms of {sync_seconds * 1000:.0f} ms blocking "
          f"({stall / sync_seconds:.0%}); all: {[round(s * 1000) for s in stalls]} ms")
    old_seconds = nbytes / GB / old
    report.row("1.6 GB: async save, training-thread stall",
               {"runai-entry": f"{stall * 1000:.0f} ms",
                "reference": f"blocking save {sync_seconds * 1000:.0f} ms, 0.1.0's "
                             f"{old_seconds * 1000:.0f} ms",
                "ratio": f"{stall / sync_seconds:.0%} (of 0.1.0's: {stall / old_seconds:.0%})"},
               "≤ 15% of the blocking save", "pass" if stall / sync_seconds <= 0.15 else "FAIL")

    # -- the async stall inside a training loop -----------------------------------------------
    loop_rows(report, model, optimizer, directory, reps, sync_seconds, step)

    # -- training while a write runs ----------------------------------------------------------
    torch.set_num_threads(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(),
                              torch.nn.Linear(1024, 512))
    opt = torch.optim.SGD(mlp.parameters(), lr=1e-3)
    batch = torch.randn(64, 512)

    def train_steps(until: object) -> float:
        """Steps/s of the small model until ``until()`` is true (at least 0.5 s)."""
        count, started = 0, time.perf_counter()
        while True:
            loss = mlp(batch).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            count += 1
            elapsed = time.perf_counter() - started
            if elapsed >= 0.5 and until():  # type: ignore[operator]
                return count / elapsed

    # For the forked writer: the bytes of a save, read back from it and staged the same way.
    step += 1
    ckpt.save(step)
    ckpt.close()
    plan = tensorfile.plan(tensorfile.load(os.path.join(directory, f"step-{step:08d}.safetensors")))
    staging = Staging()
    staging.fill(plan)
    rates: dict[str, list[float]] = {"no save": [], "writer thread": [], "writer process": [],
                                     "dd oflag=direct": []}
    for rep in range(reps):
        clear()
        target = os.path.join(directory, f"t{rep}.safetensors")
        t0 = time.perf_counter()
        rates["no save"].append(train_steps(lambda t0=t0: time.perf_counter() - t0 >= 1.0))
        step += 1
        ckpt.step(step)  # the Checkpointer's own writer thread, as a training loop runs it
        rates["writer thread"].append(train_steps(lambda: not ckpt.writing))
        ckpt.close()
        clear()
        pid = os.fork()
        if pid == 0:  # the child only writes the staged bytes: no torch kernels, no threads
            try:
                _write(tensorfile, target, plan, staging)
            finally:
                os._exit(0)
        exited = lambda pid=pid: os.waitpid(pid, os.WNOHANG)[0] != 0  # noqa: E731
        rates["writer process"].append(train_steps(exited))
        # The floor: the disk's own writes of as many bytes, by a process that is not Python.
        clear()
        dd = subprocess.Popen(["dd", "if=/dev/zero", f"of={target}", "bs=64M", "oflag=direct",
                               f"count={-(-nbytes // (64 << 20))}"], stderr=subprocess.DEVNULL)
        rates["dd oflag=direct"].append(train_steps(lambda dd=dd: dd.poll() is not None))
    clear()
    rstats = common.print_stats("training steps/s (one torch thread)", "steps/s", rates,
                                baseline="no save")
    base = rstats["no save"]["median"]
    thread_ratio = rstats["writer thread"]["median"] / base
    process_ratio = rstats["writer process"]["median"] / base
    dd_ratio = rstats["dd oflag=direct"]["median"] / base
    report.row("training steps/s during a background write vs no save",
               {"runai-entry": f"thread {thread_ratio:.2f}x",
                "reference": f"no save {base:.0f} steps/s; forked writer process "
                             f"{process_ratio:.2f}x; during dd oflag=direct {dd_ratio:.2f}x",
                "ratio": f"{thread_ratio:.2f}x"},
               "≥ 0.95×", "pass" if thread_ratio >= 0.95 else "FAIL")
    report.note(common.machine_load())
    report.print_markdown()
    report.write()
    return 0


def loop_rows(report: common.Report, model: Any, optimizer: Any, directory: str, reps: int,
              sync_seconds: float, step: int, batch: Any = None,
              sync: Any = lambda: None) -> list[tuple[str, str, str]]:
    """The async save inside a real loop of the same model (forward, backward, Adam's step):
    what the training thread is held (``step()``, and with ``background_copy`` the wait at the
    next ``optimizer.step()``), and the loop time lost to the save over the two iterations that
    contain it (the copy, and its contention with the forward pass), against iterations with no
    save. Copy here and copy behind alternate, each save written and closed before the next.
    ``sync``: what makes an iteration's time the device's (CUDA). Also bench/gpu_save.py's."""
    import torch

    from runai_entry.training.checkpointer import Checkpointer
    from runai_entry.training.stop import StopFlag

    if batch is None:
        batch = torch.randn(16, model[0].weight.shape[1])

    def iteration() -> None:
        optimizer.zero_grad()
        model(batch).square().mean().backward()
        optimizer.step()

    kinds = {"copy here": False, "copy behind": True}
    ckpts = {}
    for kind, behind in kinds.items():
        sub = os.path.join(directory, kind.replace(" ", "-"))
        os.makedirs(sub, exist_ok=True)
        ckpts[kind] = Checkpointer(sub, keep=1, every_steps=1, async_save=True,
                                   background_copy=behind, flag=StopFlag(signals=[]))
        ckpts[kind].restore(model=model, optimizer=optimizer)
    iteration()  # warm: Adam's moments exist, the allocator has its blocks
    sync()
    held: dict[str, list[float]] = {kind: [] for kind in kinds}
    lost: dict[str, list[float]] = {kind: [] for kind in kinds}
    plain: list[float] = []
    for _, kind in common.interleaved(["none", *kinds], reps):
        started = time.perf_counter()
        iteration()
        if kind == "none":
            iteration()
            sync()
            plain.append((time.perf_counter() - started) / 2)
            continue
        ckpt = ckpts[kind]
        step += 1
        t0 = time.perf_counter()
        ckpt.step(step)
        hold = time.perf_counter() - t0
        iteration()  # with copy behind: the copy runs under its forward pass; the fence waits
        sync()
        elapsed = time.perf_counter() - started
        held[kind].append(hold + ckpt.fence_waited)
        lost[kind].append(elapsed)
        ckpt.close()
        os.sync()
    # The copy-behind Checkpointer's hook stays on the optimizer: with no copy in flight it
    # returns at once, and what is measured after this compares runs that both carry it.
    base = statistics.median(plain)
    print(f"\nloop iteration (forward, backward, Adam), no save: median {base * 1000:.0f} ms")
    rows = []
    for kind in kinds:
        h = statistics.median(held[kind])
        extra = statistics.median(lost[kind]) - 2 * base
        print(f"async save, {kind}: training thread held {h * 1000:.0f} ms "
              f"({h / sync_seconds:.0%} of the blocking save); loop time lost {extra * 1000:.0f} "
              f"ms ({extra / sync_seconds:.0%}); held all: {[round(x * 1000) for x in held[kind]]}")
        label = f"in a training loop: async save ({kind}), training thread held"
        value = f"{h * 1000:.0f} ms"
        verdict = (f"{h / sync_seconds:.0%} of the blocking save held; loop time lost over the "
                   f"save's two iterations {extra * 1000:.0f} ms, {extra / sync_seconds:.0%} "
                   f"(iteration {base * 1000:.0f} ms)")
        rows.append((label, value, verdict))
        report.row(label, {"runai-entry": value, "reference": f"blocking save "
                           f"{sync_seconds * 1000:.0f} ms", "ratio": verdict},
                   "≤ 10% of the blocking save", "pass" if h / sync_seconds <= 0.10 else "FAIL")
    return rows


def _write(tensorfile: object, target: str, plan: object, staging: object) -> None:
    tensorfile.write(target, plan, staging)  # type: ignore[attr-defined]
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.path.insert(0, common.REPO)
    with common.session():
        sys.exit(main())
