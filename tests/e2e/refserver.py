"""A tiny reference HTTP server for lab tests (run inside the lab namespace as its own process).

Serves a boot root read-only (GET/HEAD) and records every POST to /api/v1/hello as one JSON line
{"client": ip, "path": ..., "body": <parsed JSON or the raw text>} in the record file.

    python tests/e2e/refserver.py --root DIR --bind 198.18.0.1 --port 8080 --record FILE
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HELLO = "/api/v1/hello"


class Handler(SimpleHTTPRequestHandler):
    record: Path
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        if self.path.split("?")[0] != HELLO:
            self.send_error(404)
            return
        try:
            body: object = json.loads(raw)
        except ValueError:
            body = raw
        entry = {"client": self.client_address[0], "path": self.path, "body": body}
        with self.lock, self.record.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
        reply = b'{"ok": true}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.client_address[0]} {format % args}\n")
        sys.stderr.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    Handler.record = args.record
    handler = functools.partial(Handler, directory=str(args.root))
    with ThreadingHTTPServer((args.bind, args.port), handler) as server:
        sys.stderr.write(f"serving {args.root} on {args.bind}:{args.port}\n")
        sys.stderr.flush()
        server.serve_forever()


if __name__ == "__main__":
    main()
