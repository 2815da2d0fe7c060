"""A real OpenSSH server for the remote-host tests: its own config, host key, user key and port.

The tests start ``sshd -D -e -f CONFIG`` on a loopback port (and, for the link tests, a
second one inside a network namespace reached through a veth pair whose link can be cut).
The remote "host" is this machine, so a task run there carries the test's state directory
(ssh SetEnv, accepted by this sshd) and the autouse leak check sees its processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from mcp_backgroundr.config import HOME_ENV

SSHD = "/usr/sbin/sshd"
START_SECONDS = 10.0
PRIVILEGE_SEPARATION_DIR = Path("/run/sshd")


def missing() -> str | None:
    """Why the tests cannot have an sshd, or None."""
    if not Path(SSHD).exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "OpenSSH (openssh-server, openssh-client) is not installed; .ci/run installs it"
    if os.geteuid() != 0:
        return "sshd for the tests runs as root (as in CI)"
    return None


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@dataclass
class Sshd:
    """One running sshd and what a client needs to reach it."""

    directory: Path
    address: str
    port: int
    process: subprocess.Popen[bytes]
    host_public_key: str

    def client_config(self, home: Path, alias: str, *, known: bool = True, python: bool = True) -> str:
        """An ssh_config entry for ``alias``; ``known``: its host key is in known_hosts; ``python``:
        python3 is on the PATH of its sessions (else it logs in with a key whose PATH is empty)."""
        known_hosts = self.directory / ("known_hosts" if known else "unknown_hosts")
        if not known_hosts.exists():
            name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
            entry = f"{name} {self.host_public_key}\n" if known else ""
            known_hosts.write_text(entry)
        return (
            f"Host {alias}\n  HostName {self.address}\n  Port {self.port}\n  User root\n"
            f"  IdentityFile {self.directory / ('user_key' if python else 'nopython_key')}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            f"  SetEnv {HOME_ENV}={home}\n"
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _wait_listening(address: str, port: int, process: subprocess.Popen[bytes], netns: str | None) -> None:
    deadline = time.monotonic() + START_SECONDS
    probe = ["ip", "netns", "exec", netns] if netns else []
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sshd exited with status {process.returncode}")
        if netns:
            listening = subprocess.run([*probe, "ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
            if listening.stdout.strip():
                return
        else:
            with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
                return
        time.sleep(0.05)
    raise AssertionError(f"sshd did not listen on {address}:{port} within {START_SECONDS} s")


@contextlib.contextmanager
def running_sshd(
    directory: Path, address: str = "127.0.0.1", netns: str | None = None, own_pids: bool = False
) -> Iterator[Sshd]:
    """Start sshd on ``address`` (inside ``netns``, when given; ``own_pids``: in a PID namespace of
    its own, as on another machine, whose processes all end with it); stop it on the way out."""
    directory.mkdir(parents=True, exist_ok=True)
    PRIVILEGE_SEPARATION_DIR.mkdir(mode=0o755, exist_ok=True)
    host_key = keygen(directory / "host_key")
    user_key = keygen(directory / "user_key")
    nopython_key = keygen(directory / "nopython_key")
    (directory / "authorized_keys").write_text(f'{user_key}\nenvironment="PATH=/var/empty" {nopython_key}\n')
    port = free_port() if netns is None else 22
    remote_home = directory / "home"
    remote_home.mkdir(exist_ok=True)
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {address}\nHostKey {directory / 'host_key'}\n"
        f"PidFile {directory / 'sshd.pid'}\nAuthorizedKeysFile {directory / 'authorized_keys'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin prohibit-password\nUsePAM no\nAcceptEnv {HOME_ENV}\nLogLevel ERROR\n"
        "PermitUserEnvironment PATH\n"
        # A fresh remote user: not this machine's root startup files (a pyenv init in .bashrc
        # runs `pyenv rehash` at every login, which outlives calls and would count as leaked).
        f"SetEnv HOME={remote_home}\n"
    )
    prefix = ["ip", "netns", "exec", netns] if netns else []
    if own_pids:
        prefix += ["unshare", "--pid", "--kill-child", "--mount-proc"]
    log = (directory / "sshd.log").open("wb")
    process = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    server = Sshd(directory, address, port, process, " ".join(host_key.split()[:2]))
    try:
        _wait_listening(address, port, process, netns)
        yield server
    finally:
        server.stop()
        log.close()


@contextlib.contextmanager
def frozen(server: Sshd) -> Iterator[None]:
    """The host hangs: its sshd and the sshd of every session it serves are SIGSTOPped (each open
    connection stays open, its peer answers nothing; a new one gets no banner) until the block ends."""
    listener = psutil.Process(server.process.pid)
    stopped = [listener, *(p for p in listener.children(recursive=True) if p.name().startswith("sshd"))]
    for sshd in stopped:
        sshd.suspend()
    try:
        yield
    finally:
        for sshd in stopped:
            with contextlib.suppress(psutil.NoSuchProcess):
                sshd.resume()
