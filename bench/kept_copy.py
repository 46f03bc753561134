"""What keeping a copy of an in-place checkpoint costs at a start
(runai_entry/supervisor/keptcopy.py).

For each size, a file of random bytes is written and synced in DIR, then cloned (the FICLONE
ioctl) and copied with ``copy_file_range`` in 16 MiB chunks, each followed by the fsync the kept
copy gets, as keptcopy does. The source is in the page cache, as a checkpoint just verified
(and often just written) is. Run it on the storage the checkpoints live on:

    .venv/bin/python bench/kept_copy.py DIR [MIB ...]     (default sizes: 100 256 512 1024)
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

FICLONE = 0x40049409
CHUNK = 16 << 20


def source(path: str, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())


def copy(src: int, out: int, how: str) -> None:
    if how == "reflink":
        fcntl.ioctl(out, FICLONE, src)
        return
    size, done = os.fstat(src).st_size, 0
    while done < size:
        done += os.copy_file_range(src, out, min(CHUNK, size - done), done, done)


def main(directory: str, sizes: list[int]) -> None:
    print("| size | how | copy | fsync | total |\n|---|---|---|---|---|")
    for mib in sizes:
        src_path = os.path.join(directory, f"bench-kept-src-{mib}")
        out_path = os.path.join(directory, f"bench-kept-out-{mib}")
        source(src_path, mib)
        try:
            for how in ("reflink", "copy_file_range"):
                src = os.open(src_path, os.O_RDONLY)
                out = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    began = time.monotonic()
                    copy(src, out, how)
                    copied = time.monotonic()
                    os.fsync(out)
                    synced = time.monotonic()
                    print(f"| {mib} MiB | {how} | {copied - began:.3f} s | "
                          f"{synced - copied:.3f} s | {synced - began:.3f} s |")
                except OSError as exc:
                    print(f"| {mib} MiB | {how} | {exc.strerror} | | |")
                finally:
                    os.close(src)
                    os.close(out)
                    os.unlink(out_path)
        finally:
            os.unlink(src_path)


if __name__ == "__main__":
    main(sys.argv[1], [int(a) for a in sys.argv[2:]] or [100, 256, 512, 1024])
