"""The demo's dashboard port: 127.0.0.1:PORT of the host forwarded to a server inside a lab namespace (which the
host cannot reach otherwise); many requests at once, a large body both ways, and nothing left after the lab.
Needs root (network namespaces); skipped otherwise."""

from __future__ import annotations

import concurrent.futures
import os
import sys
from pathlib import Path

import pytest
import requests

from provision.lab import Lab
from provision.lab.forward import forward
from tests.support.wait import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

ECHO = r"""
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("inside " + self.path).encode() * 1000
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data[::-1])
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer((sys.argv[1], 8080), Echo).serve_forever()
"""


def test_a_host_port_reaches_the_server_in_the_namespace(tmp_path: Path) -> None:
    with Lab(workdir=tmp_path / "lab") as lab:
        lab.popen([sys.executable, "-c", ECHO, str(lab.address)], log_name="echo")
        fwd = forward(lab, str(lab.address), 8080)
        assert fwd.url == f"http://127.0.0.1:{fwd.host_port}/" and fwd.host_port > 0

        def answered() -> bool:
            try:
                return requests.get(f"{fwd.url}ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        assert wait_for(answered, 15.0), (tmp_path / "lab" / "forward.log").read_text()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            pages = list(pool.map(lambda i: requests.get(f"{fwd.url}p{i}", timeout=10), range(32)))
        assert all(p.status_code == 200 and p.content == f"inside /p{i}".encode() * 1000 for i, p in enumerate(pages))
        body = os.urandom(3 << 20)
        echoed = requests.post(fwd.url, data=body, timeout=20)
        assert echoed.content == body[::-1]
        port = fwd.host_port
    with pytest.raises(requests.ConnectionError):  # the relay went with the lab
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
