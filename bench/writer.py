"""Agent writer: seconds and MB/s of ``write_image`` from provision's HTTP on loopback to a file, beside
``bmaptool copy`` and ``curl | zstd -d | dd`` of the same version in the same run, with the physical floor;
then 8 agents at once against provision and against nginx serving the same chunk files (aggregate MB/s).

The disk is the one ``bench/image_import.py`` builds (2 GiB, GPT + ext4 holding ~1 GiB of /usr files, about
40 % holes at 4 MiB chunks), imported into a store in the work folder. ``python -m provision serve`` serves
it on 127.0.0.1 (its own process, so its CPU is measured apart: utime+stime from /proc). Each client runs
as its own process, as on a real PC, and writes a fresh file in the work folder:

- ``agent``: ``write_image(wipe=zero)`` with ``--workers`` threads into a sparse file of the disk size:
  check, fetch + decode + sha256 + pwrite (buffered, writeback started per chunk), holes zeroed (fallocate
  ZERO_RANGE), fsync, read-back of every chunk and hole (through the page cache, as for any regular file);
- ``agent O_DIRECT``: the same with ``direct=True``, the path of a real disk: writes bypass the page cache,
  the read-back comes from the medium;
- ``bmaptool``: ``bmaptool copy --bmap URL/disk.bmap URL/disk.img.zst FILE`` (checks each range's sha256
  while writing, fsyncs; no read-back);
- ``curl|zstd|dd``: ``curl -s URL/disk.img.zst | zstd -d | dd of=FILE bs=4M iflag=fullblock conv=fsync``
  (no check at all; writes the holes as zeros; ``conv=fsync`` so that all three end on the disk).

The three alternate for ``--rounds`` rounds (best and median); before them every chunk is fetched once from
provision, so that no round pays its first check of the chunk files. Every result file is compared with the
raw disk's sha256 (outside the timing). Client CPU is the waited-for children's rusage (the client process
and its own children, e.g. bmaptool's zstd).

- **floor**: the work no writer of this image can skip, measured in this run: decoding every distinct chunk
  once (python-zstandard, one thread: CPU seconds) and two sha256 passes over the data (the check on arrival
  and the read-back), divided by the CPUs. (The agent's read-back compares with the checked bytes by memcmp
  instead of a second sha256, so it can go below it.)
- **at once**: ``--agents`` agents (buffered, each its own file) start together against provision, then
  against nginx (``worker_processes auto``, sendfile, access log off) serving the store's chunk files and
  the index at the same URL paths, ``--rounds`` times, alternating which goes first; the figure is the median
  round's aggregate MB/s and the ratio provision / nginx of the medians.

Nothing is asserted; figures are printed, then one JSON line. Needs root or write access to /var/tmp.

    .venv/bin/python bench/writer.py [--workdir DIR] [--rounds 3] [--workers 4] [--agents 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: `bench.` imports from a clone

from bench.image_import import make_disk, size_arg
from bench.writing.floor import physical_floor
from bench.writing.nginx import Nginx
from provision.images import ImageStore, ImageVersion

TOOLS = ("curl", "zstd", "dd", "bmaptool", "mkfs.ext4", "nginx")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid: int) -> float:
    """utime + stime of a live process (the server), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def file_sha256(path: Path, length: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while length > 0 and (block := f.read(min(8 << 20, length))):
            h.update(block)
            length -= len(block)
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m provision serve`` on 127.0.0.1 with the bench store, HTTP only."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        (work / "boot").mkdir(exist_ok=True)
        config = work / "provision.yaml"
        config.write_text(f"image_store: {work / 'store'}\n")
        ready = work / "ready.json"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "provision", "serve", "--config", str(config), "--address", "127.0.0.1",
            "--dhcp", "off", "--tftp-port", "0", "--http-port", str(self.port), "--state-dir", str(work / "state"),
            "--boot-root", str(work / "boot"), "--ready-file", str(ready),
        ]  # fmt: skip
        with (work / "server.log").open("ab") as log:  # bmaptool hangs up after the last mapped range: logged
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"writer bench: provision serve did not start (rc {self.proc.poll()})")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def agent_argv(server: str, index: str, target: Path, workers: int, direct: bool) -> list[str]:
    spec = json.dumps({"server": server, "index": index, "target": str(target), "workers": workers, "direct": direct})
    return [sys.executable, str(Path(__file__).resolve()), "--agent-run", spec]  # from any folder


def agent_run(spec_text: str) -> int:
    """One agent (a child process of the bench): write, then print the report as JSON."""
    from provision.agent import write_image

    logging.basicConfig(level=logging.WARNING, format="agent: %(message)s")
    spec = json.loads(spec_text)
    report = write_image(spec["server"], spec["index"], Path(spec["target"]), workers=spec["workers"], wipe="zero",
                         direct=spec["direct"] or None)  # fmt: skip
    print(json.dumps(report.to_dict()))
    return 0


def fresh(path: Path, size: int | None) -> Path:
    path.unlink(missing_ok=True)
    if size is not None:
        with path.open("wb") as f:
            f.truncate(size)
    return path


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, server: Server, version: ImageVersion) -> None:
        self.args, self.work, self.server, self.version = args, work, server, version
        self.size = version.index.disk_size
        self.raw_sha = version.index.provenance["source"]["sha256"]
        self.base = f"{server.url}/images/bench/{version.digest}"

    def warm(self) -> None:
        """Every distinct chunk fetched once from provision (its first check of each chunk file, untimed)."""
        with requests.Session() as session:
            for sha in self.version.index.unique_chunks():
                session.get(f"{self.server.url}/chunks/{sha}", timeout=60).raise_for_status()

    def measure(self, name: str, run: Callable[[], list[Path]], server: Server | Nginx | None = None) -> dict[str, Any]:
        server = server or self.server
        cpu, server_cpu, started = children_cpu(), server.cpu(), time.perf_counter()
        targets = run()
        wall = time.perf_counter() - started
        row = {"tool": name, "s": wall, "client_cpu_s": children_cpu() - cpu,
               "server_cpu_s": server.cpu() - server_cpu, "agents": len(targets),
               "MB/s": len(targets) * self.size / 1e6 / wall}  # fmt: skip
        row["identical"] = all(file_sha256(t, self.size) == self.raw_sha for t in targets)
        for t in targets:
            t.unlink(missing_ok=True)
        return row

    def agents(self, n: int, *, direct: bool = False, nginx: Nginx | None = None) -> dict[str, Any]:
        reports: list[dict[str, Any]] = []
        server = nginx or self.server
        index = f"{nginx.url}/index.json" if nginx else f"{self.base}/index.json"

        def run() -> list[Path]:
            targets = [fresh(self.work / f"agent{i}.img", self.size) for i in range(n)]
            procs = [subprocess.Popen(agent_argv(server.url, index, t, self.args.workers, direct),
                                      stdout=subprocess.PIPE, text=True) for t in targets]  # fmt: skip
            for proc in procs:
                out, _ = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(f"writer bench: an agent failed (rc {proc.returncode})")
                reports.append(json.loads(out.strip().splitlines()[-1]))
            return targets

        name = f"agent x{n}" if n > 1 else "agent O_DIRECT" if direct else "agent"
        row = self.measure(f"{name} nginx" if nginx else name, run, server)
        row["reports_ok"] = all(r["ok"] for r in reports)
        row["stage_seconds"] = {k: round(statistics.median(r["stage_seconds"][k] for r in reports), 2)
                                for k in reports[0]["stage_seconds"]}  # fmt: skip
        row["fetched"] = reports[0]["fetched"]
        row["bytes_fetched"] = reports[0]["bytes_fetched"]
        row["readback"] = reports[0]["readback"]
        return row

    def bmaptool(self) -> dict[str, Any]:
        def run() -> list[Path]:
            target = fresh(self.work / "bmaptool.img", None)
            argv = ["bmaptool", "-q", "copy", "--bmap", f"{self.base}/disk.bmap", f"{self.base}/disk.img.zst",
                    str(target)]  # fmt: skip
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            return [target]

        return self.measure("bmaptool", run)

    def pipeline(self) -> dict[str, Any]:
        def run() -> list[Path]:
            target = fresh(self.work / "dd.img", None)
            curl = subprocess.Popen(["curl", "-sSf", f"{self.base}/disk.img.zst"], stdout=subprocess.PIPE)
            zstd = subprocess.Popen(["zstd", "-d", "-q", "-c"], stdin=curl.stdout, stdout=subprocess.PIPE)
            dd = subprocess.Popen(["dd", f"of={target}", "bs=4M", "iflag=fullblock", "conv=fsync", "status=none"],
                                  stdin=zstd.stdout)  # fmt: skip
            assert curl.stdout is not None and zstd.stdout is not None
            curl.stdout.close()
            zstd.stdout.close()
            if dd.wait() or zstd.wait() or curl.wait():
                raise SystemExit("writer bench: curl | zstd -d | dd failed")
            return [target]

        return self.measure("curl|zstd|dd", run)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["s"] for r in rows]
    best = min(rows, key=lambda r: r["s"])
    return {**best, "s": min(walls), "median_s": statistics.median(walls), "runs": len(rows),
            "MB/s": best["MB/s"], "identical": all(r["identical"] for r in rows),
            "client_cpu_s": statistics.median(r["client_cpu_s"] for r in rows),
            "server_cpu_s": statistics.median(r["server_cpu_s"] for r in rows)}  # fmt: skip


def concurrent(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round of an at-once comparison (by wall time), with every round's figures kept."""
    ordered = sorted(rows, key=lambda r: r["s"])
    median = ordered[(len(ordered) - 1) // 2]
    return {**median, "rounds": len(rows), "walls_s": [round(r["s"], 2) for r in rows],
            "identical": all(r["identical"] for r in rows),
            "reports_ok": all(r["reports_ok"] for r in rows)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-size", type=size_arg, default=2 << 30)
    parser.add_argument("--content", type=size_arg, default=1 << 30)
    parser.add_argument("--chunk-size", type=size_arg, default=4 << 20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--agents", default="8", help="agent counts to run at once, against provision and nginx")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the disk and store here for the next run")
    parser.add_argument("--agent-run", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.agent_run:
        return agent_run(args.agent_run)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"writer bench: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-writer-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        for leftover in work.glob("*.img"):
            if leftover.name != "disk.img":
                leftover.unlink()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    load_before = os.getloadavg()[0]
    raw, disk = make_disk(work, args.disk_size, args.content)
    store = ImageStore(work / "store")
    try:
        version = store.resolve("bench")
    except Exception:
        version = store.import_raw(raw, "bench", chunk_size=args.chunk_size)
    if version.index.chunk_size != args.chunk_size:
        version = store.import_raw(raw, "bench", chunk_size=args.chunk_size)
    store.export(version.ref, work / "export")  # warms the bmap cache and the chunk files' pages
    floor = physical_floor(store, version)
    server = Server(work)
    nginx: Nginx | None = None
    try:
        bench = Bench(args, work, server, version)
        bench.warm()
        rows: dict[str, list[dict[str, Any]]] = {"agent": [], "agent O_DIRECT": [], "bmaptool": [], "curl|zstd|dd": []}
        for _ in range(args.rounds):  # alternate, so a busy moment hits every tool alike
            rows["agent"].append(bench.agents(1))
            rows["agent O_DIRECT"].append(bench.agents(1, direct=True))
            rows["bmaptool"].append(bench.bmaptool())
            rows["curl|zstd|dd"].append(bench.pipeline())
        single = {name: summarize(r) for name, r in rows.items()}
        index = requests.get(f"{bench.base}/index.json", timeout=60).content
        nginx = Nginx(work, store.chunks.root, index)
        many = []
        for n in (int(n) for n in args.agents.split(",") if n.strip()):
            sides: dict[Nginx | None, list[dict[str, Any]]] = {None: [], nginx: []}
            for r in range(args.rounds):  # alternating, and which goes first too: the disk's writeback and other
                for side in (None, nginx) if r % 2 == 0 else (nginx, None):  # load made one run 0.77x, the next 1.75x
                    sides[side].append(bench.agents(n, nginx=side))
            many += [concurrent(sides[None]), concurrent(sides[nginx])]
    finally:
        server.stop()
        if nginx is not None:
            nginx.stop()
    ix = version.index
    figures = {"disk": {"size": ix.disk_size, "chunks": len(ix.chunks), "holes": ix.holes,
                        "mapped_bytes": ix.mapped_bytes, "stored_bytes": store.stored_bytes(version), **disk},
               "cpus": os.cpu_count(), "workers": args.workers, "single": single, "concurrent": many, "floor": floor,
               "load": [round(load_before, 1), round(os.getloadavg()[0], 1)]}  # fmt: skip
    report(figures)
    print(json.dumps(figures, sort_keys=True))
    return 0


def report(f: dict[str, Any]) -> None:
    d = f["disk"]
    print(f"disk: {d['size'] / 2**30:.2f} GiB, {d['chunks']} chunks, {d['holes']} holes, "
          f"{d['mapped_bytes'] / 2**20:.0f} MiB mapped, {d['stored_bytes'] / 2**20:.0f} MiB stored (zstd); "
          f"{f['cpus']} CPUs (load {f['load'][0]} before, {f['load'][1]} after); "
          f"agent workers {f['workers']}")  # fmt: skip
    print(f"{'':14} {'best':>7} {'median':>7} {'MB/s':>6} {'client CPU':>10} {'server CPU':>10}  identical")
    single = f["single"]
    for name, row in single.items():
        print(f"{name:14} {row['s']:6.2f}s {row['median_s']:6.2f}s {row['MB/s']:6.0f} {row['client_cpu_s']:9.2f}s "
              f"{row['server_cpu_s']:9.2f}s  {row['identical']}")  # fmt: skip
    for name in ("agent", "agent O_DIRECT"):
        print(f"{name} stages (best run): {single[name]['stage_seconds']}, read-back from {single[name]['readback']}")
    fl = f["floor"]
    print(f"physical floor: {fl['floor_s']:.2f} s = (decode {fl['decode_cpu_s']:.2f} CPU s + 2 x sha256 "
          f"{fl['sha256_pass_cpu_s']:.2f} CPU s) / {fl['cpus']} CPUs")  # fmt: skip
    for name in ("agent", "agent O_DIRECT"):  # O_DIRECT is the path of a real disk (a block device)
        agent, bmap, dd = single[name], single["bmaptool"], single["curl|zstd|dd"]
        print(
            f"speed-up of {name}: bmaptool / agent = {bmap['median_s'] / agent['median_s']:.2f}x median "
            f"(goal >= 2.5x), {bmap['s'] / agent['s']:.2f}x best; curl|zstd|dd / agent = "
            f"{dd['median_s'] / agent['median_s']:.2f}x median; agent median {agent['median_s']:.2f} s = "
            f"{agent['median_s'] / fl['floor_s']:.2f}x the floor {fl['floor_s']:.2f} s"
        )
    print(
        f"{'at once':14} {'median':>7} {'aggr MB/s':>9} {'client CPU':>10} {'server CPU':>10}  identical  "
        "every round's wall, stages (median round)"
    )
    for row in f["concurrent"]:
        ok = row["identical"] and row["reports_ok"]
        print(f"{row['tool']:14} {row['s']:6.2f}s {row['MB/s']:9.0f} {row['client_cpu_s']:9.2f}s "
              f"{row['server_cpu_s']:9.2f}s  {ok!s:9}  {row['walls_s']} {row['stage_seconds']}")  # fmt: skip
    by_tool = {row["tool"]: row for row in f["concurrent"]}
    for row in f["concurrent"]:
        peer = by_tool.get(f"{row['tool']} nginx")
        if peer is not None:
            print(f"{row['tool']}: provision / nginx aggregate throughput = {row['MB/s'] / peer['MB/s']:.2f}x "
                  f"(goal >= 0.9x); server CPU {row['server_cpu_s']:.2f} vs {peer['server_cpu_s']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
