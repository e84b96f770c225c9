"""``provision lab demo``: the workshop's flow on a small QEMU rack in a private network namespace.

Set-up (embedded defaults, under the demo's workdir): the boot root (Debian's iPXE, shim, signed GRUB and
kernel), the live environment (``ensure_live``: built once, then reused from its cache), the tiny image
(``images/tiny.yaml``, built into a store of its own) and two recipes by firmware (image tiny, wipe zero,
grow the root file system). Then a lab starts, ``provision serve`` runs on its bridge with full DHCP, and the
blank PCs (by default SeaBIOS + Debian 13's iPXE ROM, and OVMF with Secure Boot on) network-boot at once:
each one boots the live environment, whose agent probes it and says hello; the server picks its recipe, the
PC is imaged, verified and the run recorded; the agent reboots it, which ends QEMU (``-no-reboot``), and the
demo powers it on again: it network-boots, provision's boot script says "local disk", it boots the tiny
image from its own disk and the first-boot callback reaches the server. Milestones (follow.py) are reported
as they happen, then each PC as the server recorded it. Everything is stopped and removed at the end.

Nothing here prints: progress goes to a callback, the outcome is a ``DemoResult`` (report.py formats it).
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from provision.bootfiles import DEFAULT_CACHE, DebCache, install_boot_root, qemu_roms
from provision.builder.build import DISK_TOOLS
from provision.builder.runner import TOOL_PACKAGES
from provision.lab import follow as fl
from provision.lab.demorack import DEFAULT_PCS, RECIPES, DemoPC
from provision.lab.forward import forward
from provision.lab.host import LabUnavailable
from provision.lab.netns import Lab
from provision.lab.qemu import PC, Firmware, LabError
from provision.lab.report import DemoResult, PCResult, RunRecord, mb, on_off
from provision.lab.server import LabServer, netboot_missing
from provision.resources import data_dir

Progress = Callable[[str], None]

CMDLINE = "console=ttyS0 panic=5"  # panic=5: a kernel panic ends QEMU (-no-reboot) instead of hanging
HTTP_PORT = 8080  # images/tiny.yaml's first boot calls back to http://198.18.0.1:8080/api/v1/firstboot
TINY = data_dir("images") / "tiny.yaml"  # the checkout's images/tiny.yaml, or the installed copy
MiB = 1 << 20
DISK_SIZE = 256 * MiB  # larger than the 128 MiB image: the root file system grows into the rest
MEMORY = 1024  # MiB: the live environment unpacks ~116 MiB into RAM
# Per PC, from power-on (TCG, 2 PCs at once on 2 CPUs). Measured (docs/lab.md): imaged and rebooted 43-101 s
# after power-on, own disk to callback 19-37 s after the second power-on; the upper ends on a loaded host.
IMAGING_TIMEOUT = 300.0
OWN_DISK_TIMEOUT = 180.0
KEY_STATE = "demo-server"  # under the cache: the demo server's SSH key, the one its cached live environment trusts


def demo_missing(firmware: Sequence[Firmware]) -> list[str]:
    """What this machine lacks for the demo: the lab and boot files, building the live environment (root,
    mmdebstrap, kmod) and the tiny image (disk tools). Empty: ready."""
    from provision.live.build import live_missing

    found = netboot_missing(firmware) + live_missing()
    found += [
        f"{tool} (Debian package {TOOL_PACKAGES.get(tool, tool)})" for tool in DISK_TOOLS if not shutil.which(tool)
    ]
    missing: dict[str, str] = {}  # the first of each thing ("root" is asked for twice)
    for item in found:
        missing.setdefault(item.split()[0], item)
    return list(missing.values())


# ------------------------------------------------------------------------------------------------ set-up
@dataclass(frozen=True)
class Site:
    """What the demo prepared: boot root with the live environment, image store with tiny, recipes."""

    boot_root: Path
    store: Path
    recipes: Path
    image_label: str
    digest: str
    ssh_key: Path  # the server's private key, whose public half the live environment trusts


def prepare(workdir: Path, cache_dir: Path, progress: Progress) -> Site:
    """Boot root, live environment, tiny image and recipes under ``workdir``; each step timed."""
    from provision.builder import build_image
    from provision.images.store import ImageStore
    from provision.live import ensure_live
    from provision.sshkeys import ensure_server_key

    began = time.monotonic()
    progress("boot root: Debian's iPXE, shim, signed GRUB and kernel (first run: ~80 MB of Debian packages)")
    root = install_boot_root(workdir / "boot", cache_dir=cache_dir)
    progress(f"boot root ready in {time.monotonic() - began:.1f} s (kernel {root.kernel_release})")

    began = time.monotonic()
    progress("live environment: Debian's kernel + an initramfs with the agent (first run: ~50 s, then cached)")
    key = ensure_server_key(cache_dir / KEY_STATE)  # kept with the cache: the cached live environment stays valid
    live = ensure_live(
        root.dest / "live", key.public_line, deb_cache_dir=cache_dir, progress=lambda m: progress(f"  live: {m}")
    )
    how = "reused" if live.reused else "built"
    size = live.manifest.total_size
    progress(f"live environment {how} in {time.monotonic() - began:.1f} s ({mb(size, MiB)} MiB)")

    began = time.monotonic()
    if not TINY.is_file():
        raise LabError(f"{TINY}: the tiny image's definition is missing (run the demo from a clone)", path=str(TINY))
    progress(f"image: tiny (images/{TINY.name}: busybox, GRUB, shim, Debian's signed kernel)")
    store = workdir / "images"
    built = build_image(
        TINY, ImageStore(store), cache=DebCache(cache_dir), workdir=workdir / "image-work", log_dir=workdir / "logs"
    )
    index = built.version.index
    progress(
        f"image {built.label} built in {time.monotonic() - began:.1f} s: {mb(index.disk_size, MiB)} MiB, "
        f"{len(index.chunks) - index.holes} data chunks + {index.holes} holes, root digest {built.version.digest[:12]}"
    )
    recipes = workdir / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    for name, text in RECIPES.items():
        (recipes / name).write_text(text)
    names = ", ".join(name.removesuffix(".yaml") for name in RECIPES)
    progress(
        f"recipes: {names} (by firmware): erase every drive, image tiny, wipe zero, grow the root file system, "
        "hook hostname"
    )
    return Site(root.dest, store, recipes, built.label, built.version.digest, key.private_path)


def demo_config(lab: Lab, site: Site) -> dict[str, Any]:
    """provision's config in the lab: full DHCP on the bridge, chain_ipxe_roms so an iPXE NIC ROM takes the
    chain a vendor PXE ROM takes (undionly.kpxe first), the serial console, the demo's images and recipes."""
    return {
        "ports": {"http": HTTP_PORT},
        "boot": {"cmdline": CMDLINE, "chain_ipxe_roms": True},
        "dhcp": {
            "range_start": str(lab.host(100)),
            "range_end": str(lab.host(200)),
            "netmask": str(lab.network.netmask),
        },
        "image_store": str(site.store),
        "recipes_dir": str(site.recipes),
        "hooks": {"ssh_key": str(site.ssh_key)},
    }


# ------------------------------------------------------------------------------------------------ run
def run_demo(
    workdir: Path,
    *,
    pcs: Sequence[DemoPC] = DEFAULT_PCS,
    cache_dir: Path = DEFAULT_CACHE,
    progress: Progress = lambda line: None,
    keep_running: bool = False,
    dashboard_port: int = 0,
    imaging_timeout: float = IMAGING_TIMEOUT,
    own_disk_timeout: float = OWN_DISK_TIMEOUT,
) -> DemoResult:
    """Set-up, lab, ``provision serve``, the PCs in parallel through imaging and their own disk, the server's view.

    Raises LabUnavailable (what is missing, which Debian package) before touching anything; LabError,
    BootFilesError, LiveBuildError or ImageBuildError when the set-up fails. A PC that fails is reported in
    the result. SIGTERM is handled like Ctrl-C (KeyboardInterrupt) so everything is cleaned up either way.
    ``keep_running``: provision keeps serving afterwards until Ctrl-C / SIGTERM (the PCs are off).
    ``dashboard_port``: the host's 127.0.0.1 port forwarded to the dashboard inside the namespace (0: any).
    """
    if not pcs:
        raise LabError("the demo needs at least one PC")
    missing = demo_missing([pc.firmware for pc in pcs])
    if missing:
        raise LabUnavailable(missing)
    began = time.monotonic()
    with _sigterm_interrupts():
        site = prepare(workdir, cache_dir, progress)
        rom = qemu_roms(cache_dir=cache_dir) / "pxe-virtio.rom" if any(pc.firmware == "bios" for pc in pcs) else None
        setup = time.monotonic() - began
        progress(f"set-up done in {setup:.1f} s")
        if (workdir / "lab").exists():  # a previous run's disks and server state: the rack starts blank
            shutil.rmtree(workdir / "lab")
        with Lab(workdir=workdir / "lab") as lab:
            progress(f"lab: network namespace {lab.name}, bridge {lab.bridge} {lab.cidr}")
            server = LabServer.start(lab, site.boot_root, demo_config(lab, site), dhcp="full")
            progress(
                f"server: provision serve (pid {server.proc.pid}) on {lab.bridge}: full DHCP {lab.host(100)}-"
                f"{lab.host(200)}, TFTP {server.ports['tftp']}, HTTP {server.url}"
            )
            dashboard = forward(lab, str(lab.address), HTTP_PORT, dashboard_port)
            progress(f"dashboard: open {dashboard.url} in a browser of this machine (the tiles move as the PCs work)")
            rack = Rack(lab, server, progress, imaging_timeout, own_disk_timeout)
            followers = [rack.power_on(pc, rom if pc.firmware == "bios" else None) for pc in pcs]
            fl.follow(followers, rack.on_event, rack.next_phase)
            for qemu in lab.pcs:
                qemu.stop()
            results = tuple(rack.result(pc) for pc in pcs)
            seconds = time.monotonic() - began
            if keep_running and server.running:
                _serve_until_interrupted(lab, server, progress)
            code = server.stop()
            progress(f"server stopped (exit {code})")
        progress(f"lab {lab.name} removed: namespace, bridge, taps, processes")
    return DemoResult(
        results, lab.name, server.url, site.image_label, site.digest, setup, seconds, code, tuple(server.problems())
    )


class Rack:
    """The demo's PCs in the lab: powers them on, follows their phases, asks the server about their runs."""

    def __init__(
        self, lab: Lab, server: LabServer, progress: Progress, imaging_timeout: float, own_disk_timeout: float
    ) -> None:
        self.lab, self.server, self.progress = lab, server, progress
        self.timeouts = {fl.IMAGING: imaging_timeout, fl.OWN_DISK: own_disk_timeout}
        self.pcs: dict[str, tuple[DemoPC, PC]] = {}  # name -> the demo PC and its QEMU (the latest)
        self.first_started: dict[str, float] = {}
        self.phases: dict[str, list[fl.Follower]] = {}
        self.errors: dict[str, str] = {}  # what went wrong outside a follower (power on)
        self.powered_on: dict[str, float] = {}  # seconds from the first power-on to the second
        self.width = 0

    def power_on(self, pc: DemoPC, rom: Path | None) -> fl.Follower:
        qemu = self.lab.add_pc(
            pc.name, firmware=pc.firmware, mac=pc.mac, rom=rom or False, disk_size=DISK_SIZE, memory=MEMORY
        )
        self.pcs[pc.name] = (pc, qemu)
        self.first_started[pc.name] = qemu.started
        self.width = max(self.width, len(pc.name))
        self.progress(
            f"pc {pc.name}: {pc.description}, MAC {pc.mac}, blank {DISK_SIZE // MiB} MiB disk, "
            f"{MEMORY} MiB RAM: powered on"
        )
        return self._follower(pc, qemu, fl.IMAGING)

    def _follower(self, pc: DemoPC, qemu: PC, phase: str) -> fl.Follower:
        steps = fl.imaging_steps if phase == fl.IMAGING else fl.own_disk_steps
        fail = fl.IMAGING_FAIL if phase == fl.IMAGING else fl.OWN_DISK_FAIL
        offset = qemu.started - self.first_started[pc.name]
        follower = fl.Follower(
            pc.name, qemu, steps(pc.firmware, pc.mac), self.timeouts[phase], fail, phase=phase, offset=offset
        )
        self.phases.setdefault(pc.name, []).append(follower)
        return follower

    def on_event(self, follower: fl.Follower, event: fl.Event) -> None:
        text = event.text
        if event.label in (fl.PLAN, fl.VERIFIED):
            run = self.run(self.pcs[follower.name][0].mac)
            if run is None:
                text += " (no run recorded by the server)"
            elif event.label == fl.PLAN:
                text += f", recipe {run.recipe}, version {run.label}, run {run.id[:8]}"
            else:
                digest = run.verified_digest[:12] if run.verified_digest else "none"
                rate = f"{run.mean_rate / 1e6:.0f} MB/s" if run.mean_rate else "- MB/s"
                text = (
                    f"written + verified: {mb(run.bytes_written)} MB written, {rate}; server: run {run.id[:8]} "
                    f"{run.state}, verified root digest {digest}"
                )
        self.progress(fl.progress_line(follower.name, self.width, event, text))

    def next_phase(self, follower: fl.Follower) -> fl.Follower | None:
        """After the imaging reboot (QEMU exited): power the PC on again and follow it to its own disk."""
        if not follower.ok or follower.phase != fl.IMAGING:
            return None
        pc, qemu = self.pcs[follower.name]
        try:
            again = self.lab.power_on(qemu)
        except LabError as exc:
            self.errors[pc.name] = f"power on failed: {exc}"
            self.progress(f"pc {pc.name}: FAILED: power on: {exc}")
            return None
        self.pcs[pc.name] = (pc, again)
        following = self._follower(pc, again, fl.OWN_DISK)
        self.powered_on[pc.name] = following.offset
        event = fl.Event(following.offset, fl.POWER_ON, "power on: the demo presses the power button again")
        self.progress(fl.progress_line(pc.name, self.width, event))
        return following

    def run(self, mac: str) -> RunRecord | None:
        """The PC's latest run as the server recorded it (None: none, or the server did not answer)."""
        try:
            runs: list[dict[str, Any]] = self.server.api(f"/api/v1/runs?mac={mac}")
        except LabError:
            return None
        return RunRecord.from_api(runs[-1]) if runs else None

    def result(self, pc: DemoPC) -> PCResult:
        """The PC's milestones and the server's records: machine state, hello, run, first-boot callback."""
        phases = self.phases.get(pc.name, [])
        times = {label: seconds for f in phases for label, seconds in f.times.items()}
        if pc.name in self.powered_on:
            times[fl.POWER_ON] = self.powered_on[pc.name]
        failed = next((f for f in phases if f.error is not None), None)
        error = failed.error if failed else self.errors.get(pc.name)
        if error is None and (not phases or phases[-1].phase != fl.OWN_DISK or not phases[-1].finished):
            error = "did not reach its own disk"
        machine = self.server.machine(pc.mac)
        events = self.server.events(pc.mac) if machine else []
        hellos = [e["detail"] for e in events if e["kind"] == "hello"]
        boot: dict[str, Any] = hellos[-1].get("boot", {}) if hellos else {}
        firstboots = [e["detail"] for e in events if e["kind"] == "firstboot"]
        qemu = self.pcs[pc.name][1]
        result = PCResult(
            pc.name, pc.firmware, pc.mac, times, error=error, failed_phase=failed.phase if failed else None,
            state=machine["state"] if machine else None, boots=machine["boots"] if machine else None,
            firmware=boot.get("firmware"), secure_boot=boot.get("secure_boot"), kernel=boot.get("kernel"),
            run=self.run(pc.mac), firstboot=str(firstboots[-1].get("label")) if firstboots else None,
            hostname=str(firstboots[-1].get("hostname")) if firstboots and firstboots[-1].get("hostname") else None,
            serial_logs=tuple(sorted(qemu.workdir.glob("serial*.log"))),
        )  # fmt: skip
        if machine is None:
            self.progress(f"server: {pc.mac} ({pc.name}) not recorded (it was issued no boot script or GRUB config)")
            return result
        hello = (
            f"hello: firmware {result.firmware}, Secure Boot {on_off(result.secure_boot)}, kernel {result.kernel}"
            if hellos
            else "no hello"
        )
        self.progress(f"server: {pc.mac} ({pc.name}) state {result.state}, {result.boots} boot(s), {hello}")
        run = result.run
        if run is not None:
            rate = f"{run.mean_rate / 1e6:.0f} MB/s" if run.mean_rate else "-"
            self.progress(
                f"server: {pc.mac} ({pc.name}) run {run.id} {run.state}: recipe {run.recipe}, image "
                f"{run.image}@{run.label}, {mb(run.bytes_written)} MB written at {rate}, verified root digest "
                f"{run.verified_digest or 'none'}"
            )
            for drive in run.erased:
                self.progress(f"server: {pc.mac} ({pc.name}) erased {drive}")
        if result.firstboot is not None:
            named = f", host name {result.hostname}" if result.hostname else ", no host name reported"
            self.progress(f"server: {pc.mac} ({pc.name}) first boot from its own disk: {result.firstboot}{named}")
        return result


def _serve_until_interrupted(lab: Lab, server: LabServer, progress: Progress) -> None:
    progress(f"provision keeps serving at {server.url} inside network namespace {lab.name} (the PCs are off)")
    progress(f"  try:   ip netns exec {lab.name} curl -s {server.url}/api/v1/machines")
    progress(f"  enter: ip netns exec {lab.name} bash     (server log: {server.log_path})")
    progress("Ctrl-C or SIGTERM stops it")
    try:
        while server.running:
            time.sleep(0.5)
        progress(f"provision serve exited by itself ({server.proc.returncode})")
    except KeyboardInterrupt:
        progress("stopping")


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (like Ctrl-C) meanwhile, so the lab is cleaned up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
