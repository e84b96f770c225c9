"""A TCP port of the host's loopback forwarded into a lab namespace: the demo's dashboard in the host's browser.

The listening socket is made here, in the host's network namespace, on 127.0.0.1 (port 0: the kernel picks
one, or a given port); a relay process started inside the lab namespace (``Lab.popen``) inherits it. A socket
keeps the namespace it was made in, so the relay accepts host connections and connects each one to the
server inside the namespace (``198.18.0.1:8080``), copying bytes both ways until either side closes. The
relay is the lab's process: it is killed, by PID, when the lab closes.

``python -m provision.lab.forward FD HOST PORT`` is the relay (stdlib only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provision.lab.netns import Lab

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
BUFFER = 64 << 10


@dataclass(frozen=True)
class Forward:
    """``url`` on the host reaches ``target`` in the lab's namespace."""

    host_port: int
    target: str

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.host_port}/"


def forward(lab: Lab, target_host: str, target_port: int, host_port: int = 0) -> Forward:
    """Forward 127.0.0.1:``host_port`` of the host (0: any free port) to ``target_host:target_port`` inside the
    lab's namespace, for as long as the lab runs. OSError when the host port cannot be had."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, host_port))
        listener.listen(64)
        port = int(listener.getsockname()[1])
        argv = [sys.executable, "-m", "provision.lab.forward", str(listener.fileno()), target_host, str(target_port)]
        lab.popen(argv, log_name="forward", pass_fds=(listener.fileno(),))
    finally:
        listener.close()  # the relay holds its own copy
    log.info("lab %s: %s:%d forwarded to %s:%d in the namespace", lab.name, LOOPBACK, port, target_host, target_port)
    return Forward(port, f"{target_host}:{target_port}")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def _relay(fd: int, host: str, port: int) -> None:
    listener = socket.socket(fileno=fd)
    listener.setblocking(False)

    async def one(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            log.warning("forward: cannot reach %s:%d: %s", host, port, exc)
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))

    server = await asyncio.start_server(one, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="forward: %(message)s")
    if len(argv) != 3:
        log.error("usage: python -m provision.lab.forward FD HOST PORT")
        return 2
    try:
        asyncio.run(_relay(int(argv[0]), argv[1], int(argv[2])))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
