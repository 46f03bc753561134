"""A real network filesystem for the tests: sshfs over loopback, and a server that can hang.

An ``sshd`` of the test's own listens on 127.0.0.1 (a free port, keys made for the test), and
``sshfs`` mounts a directory it serves. :meth:`NetworkMount.freeze` stops the server's
``sftp-server`` with SIGSTOP: every request on the mount then waits, uninterruptibly, in the
kernel, exactly as on an NFS server that stopped answering. :meth:`thaw` lets it go on.

Skips (with the reason) where FUSE, ``sshfs`` or ``sshd`` is missing; ``.ci/run`` installs the
Debian packages ``sshfs`` and ``openssh-server`` where it can.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from tests.harness.spawning import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def missing() -> str | None:
    """Why a network mount cannot be made here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (FUSE is not available)"
    for tool in ("sshfs", "fusermount", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install sshfs openssh-server)"
    if not os.access(SSHD, os.X_OK) or not os.path.exists(SFTP_SERVER):
        return "sshd is not installed (Debian: apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "needs root (sshd on loopback with host keys of its own)"
    return None


class NetworkMount:
    """``mount`` (a path on fuse.sshfs) shows ``served`` (a local directory) through sshd."""

    def __init__(self, root: Path) -> None:
        self.served = root / "served"
        self.mount = root / "mnt"
        self.served.mkdir()
        self.mount.mkdir()
        keys = root / "keys"
        keys.mkdir()
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(keys / name)], check=True)
        shutil.copy(keys / "client.pub", keys / "authorized_keys")
        port = free_port()
        config = root / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {keys / 'host'}\n"
            f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nStrictModes no\nUsePAM no\n"
            f"PidFile {root / 'sshd.pid'}\nSubsystem sftp {SFTP_SERVER}\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        options = ",".join([
            f"IdentityFile={keys / 'client'}", "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null", "BatchMode=yes", f"port={port}",
            "ConnectTimeout=5",
        ])
        self.sshfs: subprocess.Popen[bytes] | None = None
        deadline = time.monotonic() + 15
        while not self.answers():
            # sshd may not listen yet: each try of sshfs fails at once until it does.
            if self.sshfs is None or self.sshfs.poll() is not None:
                assert time.monotonic() < deadline, "sshfs never mounted"
                self.sshfs = subprocess.Popen(
                    ["sshfs", "-f", "-o", options, f"root@127.0.0.1:{self.served}",
                     str(self.mount)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
            time.sleep(0.05)

    def answers(self) -> bool:
        """Mounted, and answering: a mount whose sshfs lost its connection at once (ENOTCONN)
        is taken down, so that the loop above mounts it again."""
        if not self.mounted():
            return False
        try:
            os.listdir(self.mount)
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
            subprocess.run(["fusermount", "-u", "-z", str(self.mount)], check=False)
            if self.sshfs is not None and self.sshfs.poll() is None:
                self.sshfs.kill()
                self.sshfs.wait()
            return False
        return True

    def mounted(self) -> bool:
        target = f" {self.mount} "
        with open("/proc/self/mountinfo") as f:
            return any(target in line and "fuse.sshfs" in line for line in f)

    def _sftp_servers(self) -> list[psutil.Process]:
        return [p for p in psutil.Process(self.sshd.pid).children(recursive=True)
                if p.name() == "sftp-server"]

    def freeze(self) -> None:
        """Stop answering: every request on the mount now hangs in the kernel."""
        servers = self._sftp_servers()
        assert servers, "no sftp-server to freeze"
        for p in servers:
            p.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for p in self._sftp_servers():
            with suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.thaw()  # releases whatever waits on the mount, so it can end
        subprocess.run(["fusermount", "-u", "-z", str(self.mount)], check=False,
                       stderr=subprocess.DEVNULL)
        for proc in (self.sshfs, self.sshd):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def network_mount(tmp_path: Path) -> Iterator[NetworkMount]:
    why = missing()
    if why:
        pytest.skip(why)
    mount = NetworkMount(tmp_path)
    try:
        yield mount
    finally:
        mount.close()


def in_kernel_wait(pid: int) -> list[int]:
    """The threads of ``pid`` waiting on the mount, or in uninterruptible sleep (state D)."""
    stuck = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with suppress(OSError):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "D" or wchan == "request_wait_answer":
                stuck.append(int(tid))
    return stuck


def waits_on_fuse(pid: int) -> bool:
    """Whether ``pid`` waits in the kernel for the FUSE server's answer.

    Interruptibly at first (state S: a signal would make FUSE send an INTERRUPT), then, once a
    fatal signal came, uninterruptibly (state D): either way its kernel wait channel says so.
    """
    with suppress(OSError):
        return Path(f"/proc/{pid}/wchan").read_text() == "request_wait_answer"
    return False


def wait_for_hung_helper(pid: int, timeout: float = 30) -> int:
    """The pid of a child of ``pid`` waiting on the frozen mount, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(pid).children(recursive=True):
            if waits_on_fuse(child.pid):
                return child.pid
        time.sleep(0.02)
    raise AssertionError(f"no child of {pid} ever waited on the frozen mount")
