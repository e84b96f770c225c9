"""nginx serving an image store's chunk files at provision's URL paths, the peer of ``provision serve``."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """utime + stime of a live process and its live children (nginx's master and workers), from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


NGINX_CONF = """\
worker_processes auto;
user {user};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location = /index.json {{ alias {work}/index.json; }}
        location ~ "^/chunks/([0-9a-f]{{2}})([0-9a-f]{{62}})$" {{ alias {chunks}/$1/$1$2.zst; }}
    }}
}}
"""


class Nginx:
    """nginx serving the store's chunk files at provision's URL paths (``/chunks/SHA``) and the index."""

    def __init__(self, work: Path, chunks: Path, index: bytes) -> None:
        self.work = work / "nginx"
        (self.work / "tmp").mkdir(parents=True, exist_ok=True)
        (self.work / "index.json").write_bytes(index)
        self.port = free_port()
        user = pwd.getpwuid(os.geteuid()).pw_name
        conf = NGINX_CONF.format(user=user, work=self.work, port=self.port, chunks=chunks)
        (self.work / "nginx.conf").write_text(conf)
        argv = ["nginx", "-p", str(self.work), "-c", str(self.work / "nginx.conf")]
        with (self.work / "stderr.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"writer bench: nginx did not start (rc {self.proc.poll()}): see {self.work}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
