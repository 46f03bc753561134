"""Tests for runai_entry.supervisor.mount: mountinfo samples taken from a Kubernetes pod, and this
host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runai_entry.supervisor.mount import (
    Mount,
    check,
    classify,
    find_mount,
    parse_mountinfo,
    storage_warning,
    unescape,
)

DATA = Path(__file__).parents[1] / "data" / "mountinfo"
POD = (DATA / "k8s-pod.txt").read_text()


def mountinfo_line(mount_id: int, mount_point: str, fstype: str, source: str) -> str:
    """One mountinfo line, escaped the way the kernel escapes it."""
    escaped = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in mount_point)
    return f"{mount_id} 1 0:{mount_id} / {escaped} rw,relatime shared:1 - {fstype} {source} rw"


class TestParse:
    def test_fields_and_optional_fields(self) -> None:
        """Mount point, type and source come from around the '-', whatever optional fields."""
        mounts = parse_mountinfo(POD)
        assert mounts[0] == Mount("/", "overlay", "overlay")
        assert Mount("/mnt/nfs/overmounted", "nfs", "10.20.0.6:/second") in mounts

    def test_octal_escapes(self) -> None:
        """\\040 is a space, \\011 a tab, \\012 a newline, \\134 a backslash."""
        assert unescape(r"/mnt/team\040share") == "/mnt/team share"
        assert unescape(r"a\011b\012c\134d") == "a\tb\nc\\d"
        assert Mount("/mnt/team share", "cifs", "//files.example.com/team share") in (
            parse_mountinfo(POD)
        )

    def test_malformed_lines_ignored(self) -> None:
        """Lines without the separator or with too few fields are skipped, not fatal."""
        text = "garbage\n1 2 3 4\n" + mountinfo_line(9, "/x", "nfs", "h:/e") + "\n\n"
        assert parse_mountinfo(text) == [Mount("/x", "nfs", "h:/e")]


class TestFindMount:
    @pytest.mark.parametrize(
        ("path", "mount_point", "fstype"),
        [
            ("/mnt/nfs/ckpt/run-1", "/mnt/nfs", "nfs4"),
            ("/mnt/nfs", "/mnt/nfs", "nfs4"),
            ("/mnt/nfsish/ckpt", "/", "overlay"),  # a prefix of the name is not a parent
            ("/mnt/gcs/ckpt", "/mnt/gcs", "fuse.gcsfuse"),
            ("/lustre/team/ckpt", "/lustre", "lustre"),
            ("/mnt/team share/ckpt", "/mnt/team share", "cifs"),
            ("/scratch/ckpt", "/scratch", "ext4"),
            ("/dev/shm/ckpt", "/dev/shm", "tmpfs"),
            ("/workspace/ckpt", "/", "overlay"),
            ("/mnt/nfs/overmounted/ckpt", "/mnt/nfs/overmounted", "nfs"),  # last mount wins
        ],
    )
    def test_longest_prefix(self, path: str, mount_point: str, fstype: str) -> None:
        """The longest mount point containing the path holds it; later mounts hide earlier."""
        mount = find_mount(path, POD)
        assert mount is not None
        assert (mount.mount_point, mount.fstype) == (mount_point, fstype)

    def test_symlink_and_missing_tail_resolved(self, tmp_path: Path) -> None:
        """A symlink is followed and a path not created yet is judged by its nearest ancestor."""
        real = tmp_path / "shared volume"
        real.mkdir()
        link = tmp_path / "link"
        link.symlink_to(real)
        text = "\n".join(
            [
                mountinfo_line(1, "/", "overlay", "overlay"),
                mountinfo_line(2, os.path.realpath(real), "nfs4", "10.0.0.1:/vol"),
            ]
        )
        mount = find_mount(link / "not" / "yet", text)
        assert mount is not None and mount.fstype == "nfs4"

    def test_this_host(self, tmp_path: Path) -> None:
        """The real /proc/self/mountinfo always has a mount holding an existing path."""
        if not os.path.exists("/proc/self/mountinfo"):
            pytest.skip("no /proc")
        mount = find_mount(tmp_path)
        assert mount is not None and tmp_path.as_posix().startswith(mount.mount_point)

    def test_nothing_holds_it(self) -> None:
        """Without a root mount in the text, an unrelated path has no mount."""
        assert find_mount("/elsewhere", mountinfo_line(1, "/mnt/x", "nfs", "h:/e")) is None


class TestClassify:
    @pytest.mark.parametrize(
        ("fstype", "kind"),
        [
            ("nfs", "network"),
            ("nfs4", "network"),
            ("cifs", "network"),
            ("smb3", "network"),
            ("lustre", "network"),
            ("ceph", "network"),
            ("glusterfs", "network"),
            ("gpfs", "network"),
            ("beegfs", "network"),
            ("wekafs", "network"),
            ("fuse.s3fs", "network"),
            ("fuse.gcsfuse", "network"),
            ("fuse.goofys", "network"),
            ("fuse.rclone", "network"),
            ("fuse.juicefs", "network"),
            ("fuse.mountpoint-s3", "network"),
            ("fuse.sshfs", "network"),
            ("fuse.glusterfs", "network"),
            ("fuse.cephfs", "network"),
            ("overlay", "local"),
            ("tmpfs", "local"),
            ("ext4", "local"),
            ("xfs", "local"),
            ("btrfs", "local"),
            ("zfs", "local"),
            ("ramfs", "local"),
            ("devtmpfs", "local"),
            ("fuse.lxcfs", "local"),
            ("fuse", "unknown"),
            ("9p", "unknown"),
            ("virtiofs", "unknown"),
            ("NFS4", "network"),
        ],
    )
    def test_table(self, fstype: str, kind: str) -> None:
        """Network and cluster filesystems and object-store FUSE clients are network."""
        assert classify(Mount("/m", fstype, "src")) == kind


class TestWarning:
    def test_network_is_fine(self) -> None:
        """No warning for NFS, Lustre, gcsfuse or SMB."""
        for path in ("/mnt/nfs/c", "/lustre/c", "/mnt/gcs/c", "/mnt/team share/c"):
            assert storage_warning(path, POD) is None

    def test_overlay_and_tmpfs_lost_with_the_pod(self) -> None:
        """The container root and /dev/shm die with the pod; the sentence says so."""
        for path, where in (("/workspace/c", "overlay"), ("/dev/shm/c", "tmpfs")):
            warning = storage_warning(path, POD)
            assert warning is not None
            assert f"is on {where} mounted at" in warning
            assert "lost on preemption" in warning and "\n" not in warning

    def test_block_device_mentions_pvc(self) -> None:
        """ext4/xfs warn, but say to ignore it for a reattached network block device."""
        result = check("/mnt/ebs vol/ckpt", POD)
        assert result.kind == "local"
        assert result.mount == Mount("/mnt/ebs vol", "xfs", "/dev/nvme1n1")
        assert result.warning is not None
        assert "'/mnt/ebs vol/ckpt'" in result.warning
        assert "network block device (a PVC" in result.warning

    def test_unknown_type_warns(self) -> None:
        """An unrecognised type warns and names the type."""
        result = check("/mnt/mystery/c", POD)
        assert result.kind == "unknown"
        assert result.warning is not None and "is on fuse mounted at '/mnt/mystery'" in (
            result.warning
        )
