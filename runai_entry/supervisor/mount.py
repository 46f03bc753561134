"""Is the checkpoint directory on storage the next node will see?

A preempted job comes back on another node. Checkpoints written to the container's overlay root,
to ``/dev/shm`` or to a node-local disk are gone by then, and the job silently starts from
scratch; this module finds the filesystem that holds a path (from ``/proc/self/mountinfo``) and
says whether it is network storage, so the supervisor can warn (or refuse) before hours of
training are lost. It never logs and imports only the standard library.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

MOUNTINFO = "/proc/self/mountinfo"

Kind = Literal["network", "local", "unknown"]

#: Filesystems shared between nodes: network and cluster filesystems, and FUSE clients of
#: object stores (``fuse.<subtype>`` is how mountinfo names a FUSE mount).
NETWORK_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "ceph",
        "glusterfs",
        "gpfs",
        "beegfs",
        "wekafs",
        "afs",
        "ocfs2",  # cluster filesystems on a shared block device
        "gfs2",
        "orangefs",
        "pvfs2",
        "panfs",
        "quobyte",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.goofys",
        "fuse.rclone",
        "fuse.juicefs",
        "fuse.mountpoint-s3",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.ceph-fuse",
        "fuse.blobfuse",
        "fuse.blobfuse2",
        "fuse.alluxio-fuse",
        "fuse.geesefs",
        "fuse.quobyte",
    }
)
#: Filesystems whose contents stay on this node (or vanish with the pod).
LOCAL_TYPES = frozenset(
    {
        "overlay",
        "aufs",
        "tmpfs",
        "ramfs",
        "devtmpfs",
        "rootfs",
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "btrfs",
        "zfs",
        "f2fs",
        "vfat",
        "squashfs",
        "fuseblk",
        "fuse.lxcfs",
        "proc",
        "sysfs",
    }
)
#: Of the local types, those that live in memory or in the container layer: gone on restart.
_EPHEMERAL_TYPES = frozenset({"overlay", "aufs", "tmpfs", "ramfs", "devtmpfs", "rootfs"})
#: Local types that may sit on a network block device (EBS, Persistent Disk, iSCSI) attached
#: as a PersistentVolume, which follows the pod to its next node by reattachment.
_BLOCK_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs"})

# mountinfo escapes space, tab, newline and backslash as three octal digits (fs/proc_namespace.c).
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: where, what type, from what source."""

    mount_point: str
    fstype: str
    source: str


def unescape(field: str) -> str:
    """Decode mountinfo's octal escapes (``\\040`` is a space)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text, in file order; malformed lines are ignored.

    A line reads ``id parent major:minor root mount-point options [optional...] - fstype source
    super-options``; the optional fields vary in number, hence the search for the ``-``.
    """
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < dash + 3 or len(fields) < 5:
            continue
        mounts.append(
            Mount(unescape(fields[4]), unescape(fields[dash + 1]), unescape(fields[dash + 2]))
        )
    return mounts


def resolve(path: str | os.PathLike[str]) -> str:
    """The absolute, symlink-free form of ``path``, resolved through its nearest existing
    ancestor when it does not exist yet (the directory is created later, on that filesystem)."""
    absolute = os.path.abspath(os.fspath(path))
    missing: list[str] = []
    existing = absolute
    while not os.path.exists(existing):
        parent, name = os.path.split(existing)
        if parent == existing:
            break
        missing.append(name)
        existing = parent
    return os.path.join(os.path.realpath(existing), *reversed(missing))


def find_mount(path: str | os.PathLike[str], mountinfo: str | None = None) -> Mount | None:
    """The mount holding ``path``: the longest mount point that is a prefix of the resolved path.

    ``mountinfo`` is the text of ``/proc/self/mountinfo``, read when None; returns None when it
    cannot be read (not Linux) or lists nothing that holds the path.
    """
    if mountinfo is None:
        try:
            with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
                mountinfo = f.read()
        except OSError:  # no /proc: the check is advisory, so "cannot tell" is the answer
            return None
    target = resolve(path)
    best: Mount | None = None
    for mount in parse_mountinfo(mountinfo):
        point = mount.mount_point
        if not (point == "/" or target == point or target.startswith(point.rstrip("/") + "/")):
            continue
        # ">=": a later mount on the same point hides the earlier one.
        if best is None or len(point) >= len(best.mount_point):
            best = mount
    return best


def classify(mount: Mount) -> Kind:
    """``network`` for shared filesystems, ``local`` for node-local ones, else ``unknown``."""
    fstype = mount.fstype.lower()
    if fstype in NETWORK_TYPES:
        return "network"
    if fstype in LOCAL_TYPES:
        return "local"
    return "unknown"


@dataclass(frozen=True)
class StorageCheck:
    """What :func:`check` found about one path."""

    path: str
    mount: Mount | None
    kind: Kind
    #: One sentence for the user, or None when the path is on network storage.
    warning: str | None


def check(path: str | os.PathLike[str], mountinfo: str | None = None) -> StorageCheck:
    """Find and classify the filesystem holding ``path``, with the warning to show, if any.

    Unknown filesystem types warn too: losing every checkpoint on requeue is expensive, and the
    user who knows the type is shared can ignore one line.
    """
    shown = os.fspath(path)
    mount = find_mount(path, mountinfo)
    if mount is None:
        return StorageCheck(
            shown,
            None,
            "unknown",
            f"cannot tell which filesystem holds {shown!r} ({MOUNTINFO} unreadable);"
            " make sure it is shared storage that every node mounts",
        )
    kind = classify(mount)
    where = f"{mount.fstype} mounted at {mount.mount_point!r}"
    if kind == "network":
        warning = None
    elif kind == "unknown":
        warning = (
            f"checkpoint directory {shown!r} is on {where}, a filesystem type runai-entry does"
            " not know as shared storage: make sure the node the job is requeued on sees it"
        )
    elif mount.fstype.lower() in _EPHEMERAL_TYPES:
        warning = (
            f"checkpoint directory {shown!r} is on {where}, which lives and dies with this pod:"
            " checkpoints written there are lost on preemption; put it on a shared volume"
        )
    elif mount.fstype.lower() in _BLOCK_TYPES:
        warning = (
            f"checkpoint directory {shown!r} is on {where} (from {mount.source!r}), a disk"
            " local to this node: a job requeued elsewhere will not see its checkpoints;"
            " if this is a network block device (a PVC that follows the pod by reattachment),"
            " ignore this warning"
        )
    else:
        warning = (
            f"checkpoint directory {shown!r} is on {where}, which is local to this node:"
            " a job requeued elsewhere will not see its checkpoints"
        )
    return StorageCheck(shown, mount, kind, warning)


def storage_warning(path: str | os.PathLike[str], mountinfo: str | None = None) -> str | None:
    """One sentence saying why ``path`` may not survive a requeue, or None when it is shared."""
    return check(path, mountinfo).warning
