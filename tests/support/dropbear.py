"""A real dropbear SSH server on 127.0.0.1 for the server's SSH client, as the live environment runs it.

- ``Dropbear``: dropbear (Debian's dropbear-bin) in a private mount namespace whose /root/.ssh is a tmpfs
  holding only the given authorized key (the host's own /root/.ssh is never touched), a fresh Ed25519 host
  key, password logins off, every session's command forced to ``command`` (the live environment runs
  ``provision.wire.hooks.HOOK_COMMAND`` with its own python3; here it is this venv's). ``host_key_line`` is
  what a hello would report; ``binds``: (folder, mount point) pairs bound in its namespace only (a test's
  folder as the live environment's /run/provision). Stopped by PID.
- ``dropbear_missing()``: why dropbear cannot run here (None: it can).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support.wait import wait_for

CHILD = r"""
import json, os, subprocess, sys
keys, authorized, binds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
os.makedirs("/root/.ssh", exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "provision-test", "/root/.ssh"], check=True)
with open("/root/.ssh/authorized_keys", "w") as f:
    f.write(open(authorized).read())
os.chmod("/root/.ssh/authorized_keys", 0o600)
for source, point in binds:
    os.makedirs(point, exist_ok=True)
    subprocess.run(["mount", "--bind", source, point], check=True)
os.execvp("dropbear", ["dropbear", *sys.argv[4:]])
"""


def dropbear_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount namespace for /root/.ssh)"
    for tool in ("dropbear", "dropbearkey", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt install dropbear-bin util-linux)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dropbear:
    def __init__(
        self, workdir: Path, authorized_key: str, command: list[str], binds: Sequence[tuple[Path, str]] = ()
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.host_key = workdir / "host_ed25519"
        subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(self.host_key)], capture_output=True, check=True)
        shown = subprocess.run(["dropbearkey", "-y", "-f", str(self.host_key)], capture_output=True, text=True).stdout
        self.host_key_line = next(line for line in shown.splitlines() if line.startswith("ssh-ed25519 "))
        authorized = workdir / "authorized_keys"
        authorized.write_text(authorized_key.strip() + "\n")
        self.port = free_port()
        self.log = workdir / "dropbear.log"
        bound = json.dumps([[str(source), point] for source, point in binds])
        argv = [
            "unshare", "--mount", "--propagation", "private", sys.executable, "-c", CHILD, str(workdir),
            str(authorized), bound, "-F", "-E", "-s", "-e", "-j", "-k", "-p", f"127.0.0.1:{self.port}",
            "-r", str(self.host_key), "-P", str(workdir / "dropbear.pid"), "-c", shlex.join(command),
        ]  # fmt: skip
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._log)
        if not wait_for(self._listening, 10.0):
            self.stop()
            raise AssertionError(f"dropbear did not start: {self.log.read_text()[-2000:]}")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            return True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
