"""Raw file I/O at the disk's speed, for :mod:`.tensorfile`: ``O_DIRECT`` opening, large
writes and gathered small ones, and reading a file's bytes straight into the tensors they end up
in.

A restore used to zero-fill one file-sized ``bytearray``, fill it with one buffered read, and
copy every tensor again in ``load_state_dict``: a fraction of the disk's speed, cold. Here:

* the file is read in :data:`READ_CHUNK`-sized, 4096-aligned spans by :data:`THREADS` threads, so
  several reads are in flight (``os.preadv`` releases the GIL for the whole read);
* a span already in the page cache is read buffered (``RWF_NOWAIT``, which never waits for the
  disk) straight into the destination tensors' memory: one copy, the kernel's;
* the rest is read with ``O_DIRECT`` (the page cache's copy and its readahead limits are what
  kept buffered reads at a third of the disk) into a per-thread aligned bounce buffer, and copied
  from there to the destinations (``ctypes.memmove`` releases the GIL too, so the copy of one span
  overlaps the reads of the next). A live tensor starts anywhere in the file and at any address
  in memory, so ``O_DIRECT`` cannot read into it; a fresh one is allocated to line up with the
  file (:func:`aligned_empty`) and its whole blocks are read into it directly;
* CUDA destinations are copied from the bounce buffer, which is then pinned, with
  ``non_blocking`` copies; each thread has two bounce buffers and waits for a buffer's copies only
  before reading into it again, so the host-to-device copies overlap the next reads;
* filesystems without ``O_DIRECT`` (ramfs, some FUSE mounts) are read buffered, straight into the
  destinations.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from runai_entry.training.errors import CheckpointFormatError

ALIGN = 4096
#: Bytes per write call: large enough for the disk's full speed, small enough that a Python
#: thread never holds the GIL long between two calls (os.write releases it while it writes).
WRITE_CHUNK = 64 << 20
#: Tensors smaller than this are gathered into one writev call instead of a write each.
_SMALL = 1 << 20
#: Bytes per read: large enough for the disk's full speed; THREADS of them are in flight.
READ_CHUNK = 64 << 20
THREADS = 4
_IOV_MAX = 1024


def memory(tensor: torch.Tensor, start: int = 0, length: int | None = None) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy and without NumPy (which has no
    bfloat16)."""
    n = tensor.numel() * tensor.element_size() if length is None else length
    raw = (ctypes.c_char * n).from_address(tensor.data_ptr() + start)
    return memoryview(raw).cast("B")


def _address_view(address: int, length: int) -> memoryview:
    return memoryview((ctypes.c_char * length).from_address(address)).cast("B")


def open_direct(path: str, flags: int) -> tuple[int, bool]:
    """``path`` opened with ``O_DIRECT`` where the filesystem accepts it; True if it did."""
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            return os.open(path, flags | direct, 0o644), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # ramfs and some FUSE mounts refuse O_DIRECT
                raise
    return os.open(path, flags, 0o644), False


def buffered(fd: int) -> bool:
    """Clear ``O_DIRECT`` on ``fd`` (some filesystems accept it at open and refuse it at I/O)."""
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
    return False


# -- writing --------------------------------------------------------------------------------------


def write_all(fd: int, views: list[memoryview]) -> None:
    for view in views:
        while len(view):
            view = view[os.write(fd, view[:WRITE_CHUNK]):]


def writev_all(fd: int, views: list[memoryview]) -> None:
    while views:
        done = os.writev(fd, views[:_IOV_MAX])
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]


def groups(tensors: list[torch.Tensor]) -> Iterator[list[memoryview]]:
    """Small tensors in batches for one writev; a large tensor alone, in chunks."""
    batch: list[memoryview] = []
    size = 0
    for tensor in tensors:
        if tensor.is_cuda:
            raise ValueError("writing CUDA tensors needs a Staging buffer")
        view = memory(tensor)
        if len(view) >= _SMALL:
            if batch:
                yield batch
                batch, size = [], 0
            yield [view[i:i + WRITE_CHUNK] for i in range(0, len(view), WRITE_CHUNK)]
            continue
        batch.append(view)
        size += len(view)
        if size >= WRITE_CHUNK or len(batch) >= _IOV_MAX:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# -- reading --------------------------------------------------------------------------------------


@dataclass
class Piece:
    """``nbytes`` of the file from ``start`` belong in ``tensor`` (contiguous, CPU or CUDA).

    ``staged``: copied in from the bounce buffer with ``copy_`` rather than read into; what CUDA
    tensors need (the default for them), and how the tests run that path on a CPU.
    """

    start: int
    nbytes: int
    tensor: torch.Tensor
    staged: bool = False

    def __post_init__(self) -> None:
        self.staged = self.staged or self.tensor.device.type != "cpu"

    @property
    def end(self) -> int:
        return self.start + self.nbytes


def read_into(path: str, pieces: list[Piece], *, chunk: int = READ_CHUNK,
              threads: int = THREADS) -> None:
    """Fill every piece's tensor with its bytes of ``path``. ``pieces`` are sorted by ``start``
    and do not overlap; the caller checked the file is long enough. On an error the tensors
    hold part of the data."""
    pieces = [p for p in pieces if p.nbytes]
    if not pieces:
        return
    chunk = max(ALIGN, chunk // ALIGN * ALIGN)
    first = pieces[0].start // ALIGN * ALIGN
    spans = [(a, min(a + chunk, pieces[-1].end)) for a in range(first, pieces[-1].end, chunk)]
    size = min(chunk, -(-(pieces[-1].end - first) // ALIGN) * ALIGN)  # a small file: small buffers
    reader = _Reader(path, pieces, size, any(p.tensor.is_cuda for p in pieces))
    try:
        reader.run(spans, max(1, min(threads, len(spans))))
    finally:
        reader.close()


class _Reader:
    """The state the reading threads share: the file, its pieces, the next span to read."""

    def __init__(self, path: str, pieces: list[Piece], chunk: int, cuda: bool) -> None:
        self.path, self.pieces, self.chunk, self.cuda = path, pieces, chunk, cuda
        self.starts = [p.start for p in pieces]
        self.fd = os.open(path, os.O_RDONLY)
        self.direct_fd: int | None = None
        fd, direct = open_direct(path, os.O_RDONLY)
        if direct:
            self.direct_fd = fd
        else:
            os.close(fd)
        #: False once the filesystem said it cannot tell cached data without waiting (tmpfs).
        self.nowait = hasattr(os, "RWF_NOWAIT")
        self.lock = threading.Lock()
        self.spans: list[tuple[int, int]] = []
        self.error: BaseException | None = None

    def close(self) -> None:
        os.close(self.fd)
        if self.direct_fd is not None:
            os.close(self.direct_fd)

    def run(self, spans: list[tuple[int, int]], threads: int) -> None:
        self.spans = spans[::-1]  # popped from the end: in file order
        workers = [threading.Thread(target=self._work, name=f"runai-entry-restore-{n}")
                   for n in range(threads - 1)]
        for worker in workers:
            worker.start()
        self._work()  # this thread reads too
        for worker in workers:
            worker.join()
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        bounces = [_Bounce(self.chunk, self.cuda) for _ in range(2 if self.cuda else 1)]
        turn = 0
        try:
            while True:
                with self.lock:
                    if not self.spans or self.error is not None:
                        return
                    a, b = self.spans.pop()
                bounce = bounces[turn % len(bounces)]
                turn += 1
                bounce.wait()  # its previous host-to-device copies
                self._span(a, b, bounce)
        except BaseException as exc:  # raised on the calling thread by run()
            with self.lock:
                if self.error is None:
                    self.error = exc
        finally:
            for bounce in bounces:
                bounce.wait()

    def _span(self, a: int, b: int, bounce: _Bounce) -> None:
        """Bytes [a, b) of the file to their pieces; ``bounce`` holds byte ``a`` at its start."""
        lo = max(0, bisect.bisect_right(self.starts, a) - 1)
        hi = bisect.bisect_left(self.starts, b)
        parts = [p for p in self.pieces[lo:hi] if p.end > a]
        done = a
        if self.nowait and self._cached(a, b, bounce):
            done += self._buffered(a, done, b, parts, bounce, os.RWF_NOWAIT)
        if done < b and self.direct_fd is not None:
            done = self._direct(a, done, b, parts, bounce)
        if done < b:
            self._buffered(a, done, b, parts, bounce, 0)
        for p in parts:  # CUDA pieces always come through the bounce buffer
            if p.staged:
                x, y = max(a, p.start), min(b, p.end)
                flat = p.tensor.reshape(-1).view(torch.uint8)
                flat[x - p.start:y - p.start].copy_(bounce.buffer[x - a:y - a], non_blocking=True)
                bounce.record(p.tensor.device)

    def _views(self, a: int, x: int, b: int, parts: list[Piece],
               bounce: _Bounce) -> list[memoryview]:
        """Memory for file bytes [x, b), in order: a CPU piece's own, else the bounce buffer's."""
        views, at = [], x
        for p in parts:
            if p.end <= at or p.staged:
                continue
            if p.start > at:
                views.append(memory(bounce.buffer, at - a, min(p.start, b) - at))
                at = min(p.start, b)
            if at >= b:
                break
            y = min(p.end, b)
            views.append(_address_view(p.tensor.data_ptr() + at - p.start, y - at))
            at = y
        if at < b:
            views.append(memory(bounce.buffer, at - a, b - at))
        return views

    def _cached(self, a: int, b: int, bounce: _Bounce) -> bool:
        """Whether the span's first block is in the page cache. A probe, not a whole-span
        RWF_NOWAIT read: those, one per span of a cold file, slowed the O_DIRECT reads beside
        them by a third (bench/checkpointer_restore.py)."""
        try:
            return os.preadv(self.fd, [memory(bounce.buffer, 0, min(ALIGN, b - a))], a,
                             os.RWF_NOWAIT) > 0
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                self.nowait = False
            elif exc.errno != errno.EAGAIN:
                raise
            return False

    def _buffered(self, a: int, x: int, b: int, parts: list[Piece], bounce: _Bounce,
                  flags: int) -> int:
        """Read [x, b) through the page cache; bytes read. With RWF_NOWAIT: only what is
        cached (0 if nothing is, or the filesystem cannot tell)."""
        got = 0
        while x + got < b:
            views = self._views(a, x + got, b, parts, bounce)[:_IOV_MAX]
            try:
                n = os.preadv(self.fd, views, x + got, flags)
            except OSError as exc:
                if flags and exc.errno == errno.EOPNOTSUPP:
                    self.nowait = False
                    return got
                if flags and exc.errno == errno.EAGAIN:
                    return got
                raise
            if n == 0:
                if flags:
                    return got
                raise self._truncated(x + got)
            got += n
        return got

    def _direct(self, a: int, x: int, b: int, parts: list[Piece], bounce: _Bounce) -> int:
        """Read [x, b) with O_DIRECT, from the block ``x`` is in: straight into a CPU piece where
        its memory lines up with the file (:func:`aligned_empty`), else into the bounce buffer,
        then copied out; returns where the data read ends (``b``, or ``x`` if the filesystem
        refused O_DIRECT at read time)."""
        start = x // ALIGN * ALIGN
        views, direct = self._direct_views(a, start, b, parts, bounce)
        got = 0
        while start + got < b:
            assert self.direct_fd is not None
            try:
                n = os.preadv(self.direct_fd, _skip(views, got)[:_IOV_MAX], start + got)
            except OSError as exc:
                if exc.errno != errno.EINVAL or got:
                    raise
                with self.lock:  # accepted at open, refused at read: buffered from now on
                    if self.direct_fd is not None:
                        os.close(self.direct_fd)
                        self.direct_fd = None
                return x
            if n == 0:
                raise self._truncated(start + got)
            got += n
        base = bounce.buffer.data_ptr() - a
        for p in parts:
            if p.staged:
                continue
            lo, hi = max(x, p.start), min(b, p.end)
            skip_lo, skip_hi = direct.get(id(p), (hi, hi))  # read into the piece already
            for u, v in ((lo, min(hi, skip_lo)), (max(lo, skip_hi), hi)):
                if u < v:
                    ctypes.memmove(p.tensor.data_ptr() + u - p.start, base + u, v - u)
        return b

    def _direct_views(self, a: int, start: int, b: int, parts: list[Piece], bounce: _Bounce,
                      ) -> tuple[list[memoryview], dict[int, tuple[int, int]]]:
        """Memory for the aligned file bytes [start, b rounded up): whole aligned blocks of a CPU
        piece whose address lines up with its file offset, else the bounce buffer. Also, per
        such piece, the file range read into it."""
        stop = -(-b // ALIGN) * ALIGN
        views, direct, at = [], {}, start
        for p in parts:
            address = p.tensor.data_ptr()
            if p.staged or (address - p.start) % ALIGN:
                continue
            lo = max(at, -(-p.start // ALIGN) * ALIGN)
            hi = min(stop, p.end // ALIGN * ALIGN)
            if lo >= hi:
                continue
            if lo > at:
                views.append(memory(bounce.buffer, at - a, lo - at))
            views.append(_address_view(address + lo - p.start, hi - lo))
            direct[id(p)] = (lo, hi)
            at = hi
        if at < stop:
            views.append(memory(bounce.buffer, at - a, stop - at))
        return views, direct

    def _truncated(self, at: int) -> CheckpointFormatError:
        return CheckpointFormatError(f"{self.path!r} is truncated: it ends at byte {at}, "
                                     f"{self.pieces[-1].end} expected")


def _skip(views: list[memoryview], n: int) -> list[memoryview]:
    """``views`` without their first ``n`` bytes."""
    out = list(views)
    while out and n >= len(out[0]):
        n -= len(out[0])
        out.pop(0)
    if out and n:
        out[0] = out[0][n:]
    return out


def aligned_empty(shape: list[int], dtype: torch.dtype, offset: int) -> torch.Tensor:
    """A fresh tensor (not zero-filled) whose address is ``offset`` modulo :data:`ALIGN`, so the
    O_DIRECT reads of a tensor that starts at file offset ``offset`` land in it directly."""
    nbytes = dtype.itemsize
    for n in shape:
        nbytes *= n
    storage = torch.empty(nbytes + ALIGN, dtype=torch.uint8)
    start = (offset - storage.data_ptr()) % ALIGN
    return storage[start:start + nbytes].view(dtype).view(shape)


#: Transparent huge pages are this large on x86-64 and arm64 (4 KiB base pages).
HUGE_PAGE = 2 << 20


def huge_page_empty(nbytes: int) -> torch.Tensor:
    """A host buffer (not zero-filled) of ``nbytes``, 2 MiB-aligned and advised into
    transparent huge pages where the kernel offers them (``madvise`` mode, the common default).
    An O_DIRECT write pins every page it takes from: from huge pages it pins 512 times fewer,
    so it costs less CPU and runs faster (docs/benchmarks.md)."""
    # Private: a shared anonymous map is shmem, whose huge pages are a separate setting (off).
    area = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    storage = torch.frombuffer(area, dtype=torch.uint8)
    start = -storage.data_ptr() % HUGE_PAGE
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None and nbytes:
        try:
            area.madvise(advice, start, nbytes // HUGE_PAGE * HUGE_PAGE or HUGE_PAGE)
        except OSError as exc:  # kernels built without THP
            if exc.errno != errno.EINVAL:
                raise
    return storage[start:start + nbytes]


class _Bounce:
    """One aligned buffer of a chunk's size; pinned when on CUDA, with an event after each
    host-to-device copy out of it, so it is read into again only once those copies are done."""

    def __init__(self, chunk: int, cuda: bool) -> None:
        if cuda:
            storage = torch.empty(chunk + ALIGN, dtype=torch.uint8, pin_memory=True)
            start = -storage.data_ptr() % ALIGN
            self.buffer = storage[start:start + chunk]
        else:  # an O_DIRECT read pins the pages it reads into: fewer, larger ones cost less
            self.buffer = huge_page_empty(chunk)
        self._events: list[Any] = []

    def record(self, device: torch.device) -> None:
        if device.type == "cuda":
            # On the stream of the tensor's device, which the copy ran on: this reading thread's
            # current device is device 0 whatever the training thread set.
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record(torch.cuda.current_stream(device))
            self._events.append(event)

    def wait(self) -> None:
        for event in self._events:
            event.synchronize()
        self._events = []
