"""Atomic save: the library's atomic torch save against plain ``torch.save``, same disk.

Variants, interleaved in random order, each writing a fresh file name in a temporary directory
beside the repository (/tmp, the same disk):
* plain: ``torch.save(state, path)``: returns once the bytes are in the page cache;
* plain + fsync: the same, then fsync of the file (what durability costs anyone);
* atomic: ``runai_entry.training.atomic.atomic_write(path, lambda p: torch.save(state, p))``,
  the call ``save_training_state`` makes: temporary file, fsync, rename, fsync of the directory.
Between two saves the benchmark runs ``sync`` and deletes the file, untimed, so no save pays for
the previous one's write-back. Throughput = bytes / median seconds.
"""

from __future__ import annotations

import os
import sys
import time

import common

TARGET_RATIO = 0.9


def main() -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    report = common.Report("atomic save", args)
    import torch

    from runai_entry.training.atomic import atomic_write

    def plain(state: dict[str, torch.Tensor], path: str) -> None:
        torch.save(state, path)

    def plain_fsync(state: dict[str, torch.Tensor], path: str) -> None:
        torch.save(state, path)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def atomic(state: dict[str, torch.Tensor], path: str) -> None:
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    variants = {"plain torch.save": plain, "torch.save + fsync": plain_fsync,
                "atomic_write(torch.save)": atomic}
    sizes = [("10 MB", 10 * 2**20, 5 if args.quick else 30)]
    if not args.quick:
        sizes.append(("1 GB", 2**30, 3))
    directory = common.temp_dir("save", "/tmp")
    print(common.machine_load())
    for size_name, size, reps in sizes:
        n_tensors = 16
        state = {f"layer{i}.weight": torch.randn(size // 4 // n_tensors) for i in range(n_tensors)}
        series: dict[str, list[float]] = {label: [] for label in variants}
        for rep, label in common.interleaved(variants, reps + 1):
            path = os.path.join(directory, f"step-{rep}-{len(series[label])}.pt")
            os.sync()
            t = time.perf_counter()
            variants[label](state, path)
            elapsed = time.perf_counter() - t
            os.unlink(path)
            if rep:  # round 0 warms the allocator and the code paths
                series[label].append(elapsed * 1000)
        stats = common.print_stats(f"{size_name} state dict, {reps} saves each", "ms", series,
                                   baseline="plain torch.save")
        mb = size / 2**20
        tput = {label: mb / (s["median"] / 1000) for label, s in stats.items()}
        print("  throughput MB/s: " + ", ".join(f"{k} {v:.0f}" for k, v in tput.items()))
        ours = tput["atomic_write(torch.save)"]
        vs_plain = ours / tput["plain torch.save"]
        vs_fsync = ours / tput["torch.save + fsync"]
        report.row(
            f"{size_name}: throughput (median)",
            {"runai-entry": f"atomic {ours:.0f} MB/s",
             "reference": f"plain {tput['plain torch.save']:.0f} MB/s, plain + fsync "
                          f"{tput['torch.save + fsync']:.0f} MB/s",
             "ratio": f"{vs_plain:.2f}× plain, {vs_fsync:.2f}× plain + fsync"},
            f"≥ {TARGET_RATIO}× plain",
            "pass" if vs_plain >= TARGET_RATIO else
            f"FAIL vs plain; {'pass' if vs_fsync >= TARGET_RATIO else 'FAIL'} vs plain + fsync",
        )
        del state
    report.note(common.machine_load())
    report.write()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, common.REPO)
    with common.session():
        sys.exit(main())
