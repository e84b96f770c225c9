"""A QEMU PC is imaged with a real Debian (images/debian-mini.yaml), its hooks and a bundle run over SSH in its live
environment, and the installed system reports its first boot to the server.

- The image: debian-mini built into a store kept between runs (``E2E_STORE``, /var/cache/provision/e2e-images
  by default; rebuilt only when its inputs change: definition, packages, builder scripts).
- Before the server starts: ``provision bundles sync`` mirrors the bundle ``hello`` (the package ``hello``, not in
  the image) into the server's repository (STATE/repo, served at /repo/), so the bundle installs from the
  server, with no route out of the lab.
- PC ``bios``: SeaBIOS + iPXE ROM -> iPXE -> the live environment (the session's ``provision live build``; the
  server logs in with the key it trusts: ``hooks.ssh_key``). The recipe writes debian-mini, then the hooks
  ``hostname`` (poste-test) and ``identity``, then the bundle. The agent reboots when the run ends: QEMU runs
  with -no-reboot, so that ends it.
- On the host: the run is ``done``, every hook ok, the bundle's hook says what it installed; the written root
  holds /etc/hostname ``poste-test`` and an empty /etc/machine-id.
- The PC is powered on again: the boot script says "local disk", Debian boots from its own disk, systemd-networkd
  gets a lease, ``provision-callback.service`` POSTs its first boot: the server records a ``firstboot`` event
  with host name poste-test (matching the hook's), a fresh machine-id (the one now on the disk) and
  ``hello=VERSION`` among its packages.
- Issue 17, in-place rebuild: the server's store is a copy of the e2e store made of hard links (the e2e store
  keeps its fresh build as current, which test_image_reproducible.py reuses). debian-mini plus one package
  (``tree``) is built into it in place from version 1 (the served one): provenance mode ``in_place``, new
  chunks within issue 17's goal (<= change / 4 MiB + 10; <= 5 % of the stored chunks with one chunk of slack:
  8-9 of 191 measured; figures printed), ``e2fsck -f -n`` of the rebuilt root clean, and every block its
  bitmap calls free reads zero on the rebuilt disk (``tests.support.inplace``: dumpe2fs, read here; one block
  written into is then found).
- Issue 17, delta re-imaging: the PC (holding version 1, verified, booted once) is re-imaged (the operator's
  action) with version 2, now the store's current, by a recipe without hooks: the run is planned over version 1
  (``held``), verified as version 2, and fetches at most 5 % of version 2's data (predicted, fetched and
  verified bytes printed; more than predicted: the first boot and the hooks wrote on the disk); then Debian
  boots from the disk and the callback reports the new run with ``tree`` among its packages.

Needs root, qemu-system-x86, mmdebstrap, apt-utils and gnupg (the repository), and the Debian archive (the image,
the live environment, the boot files and the bundle; cached under /var/cache/provision). Times: docs/hooks.md;
issue 17's part adds one Debian build in place (~2 min) and one re-imaging plus one boot under TCG.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provision.bootfiles import BootRoot, DebCache
from provision.builder import BuildResult, build_image
from provision.builder.build import DEBIAN_TOOLS, DISK_TOOLS
from provision.builder.callback import CALLBACK_FAILED, CALLBACK_OK
from provision.builder.inplace import export_previous
from provision.builder.rebuild import rebuild_one
from provision.images.index import ImageVersion
from provision.images.store import ImageStore
from provision.lab import PC, Lab
from provision.store import Store
from tests.support.bundles import needs_repo_tools
from tests.support.e2e import IMAGING_STEPS, BootWatch, ProvisionServe, Timing, provision_config, require_lab
from tests.support.inplace import (
    Goal,
    change_bytes,
    e2fsck_root,
    linked_store,
    plant,
    stale_free_blocks,
    with_package,
)
from tests.support.live import LiveEnv
from tests.support.paths import DEB_CACHE, IMAGES, REPO
from tests.support.sites import live_boot_root, only_run

pytestmark = [pytest.mark.e2e, needs_repo_tools]

MINI = IMAGES / "debian-mini.yaml"
E2E_STORE = Path(os.environ.get("PROVISION_E2E_IMAGES", "/var/cache/provision/e2e-images"))
MAC = "52:54:00:18:30:01"
HOSTNAME = "poste-test"
MiB = 1 << 20
IMAGING_TIMEOUT = 900.0  # PXE -> live -> write ~760 MB -> hooks -> bundle -> reboot, under TCG
BOOT_TIMEOUT = 400.0  # network boot -> local disk -> Debian -> DHCP -> callback
FAIL = rf"Kernel panic|PROVISION-LIVE-AGENT-EXIT|{CALLBACK_FAILED}"
RECIPE = f"""name: debian-mini-pc
match:
  firmware: bios
image: debian-mini
wipe: none
grow_root: false
hooks:
  - name: hostname
    params: {{hostname: {HOSTNAME}}}
  - name: identity
bundles: [hello]
"""
ADDED = "tree"  # version 2 = debian-mini + this small package (~0.1 MiB installed: a few files, a folder)
RECIPE_V2 = """name: debian-mini-pc
match:
  firmware: bios
image: debian-mini
wipe: none
grow_root: false
"""
DELTA_SHARE = 0.05  # issue 17: bytes fetched <= 5 % of version 2's data
BUNDLE = "name: hello\ndescription: one small package that is not in debian-mini\npackages:\n  - hello\n"


def firstboot_steps() -> list[tuple[str, str]]:
    return [
        ("boot script: local disk", rf"provision: {MAC} -> local disk"),
        ("Debian kernel starts", r"Linux version"),
        ("network configured", r"Finished .*Wait for Network to be Configured"),
        ("callback OK", CALLBACK_OK),
    ]


@dataclass
class Built:
    store: ImageStore
    version: ImageVersion
    seconds: float
    status: str  # built or skipped (inputs unchanged)


def debian_mini() -> Built:
    """debian-mini in the shared e2e store, built when its inputs changed since the last run."""
    missing = [tool for tool in (*DISK_TOOLS, *DEBIAN_TOOLS, "debugfs", "losetup") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"cannot build debian-mini here: {'; '.join(missing) or 'not root'} (scripts/setup)")
    E2E_STORE.mkdir(parents=True, exist_ok=True)
    store = ImageStore(E2E_STORE / "store")
    started = time.monotonic()
    # fresh: the e2e store keeps a fresh build, which test_image_reproducible reuses as its first one
    result = rebuild_one(
        MINI, store, DebCache(DEB_CACHE), workdir=E2E_STORE / "work", log_dir=E2E_STORE / "logs", fresh=True
    )
    if result.status == "failed":
        pytest.fail(f"debian-mini did not build: {result.reason} (log in {E2E_STORE / 'logs'})")
    version = store.current("debian-mini")
    assert version is not None, result
    if result.status == "built":
        store.retain("debian-mini", keep=1)  # the cache keeps one version (~220 MB of chunks)
    return Built(store, version, time.monotonic() - started, result.status)


@dataclass
class Site:
    lab: Lab
    server: ProvisionServe
    built: Built
    pc: PC
    watch: BootWatch
    sync_seconds: float
    state: Path  # the server's state folder
    recipes: Path
    rebuilt: BuildResult | None = None  # version 2, built in place (test_debian_mini_rebuilt_in_place...)


def bundles_sync(recipes: Path, state: Path, store: ImageStore) -> float:
    started = time.monotonic()
    argv = [sys.executable, "-m", "provision", "bundles", "sync", str(recipes), "--state-dir", str(state)]
    argv += ["--store", str(store.root), "--cache", str(DEB_CACHE)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "+ hello_" in done.stdout, done.stdout
    return time.monotonic() - started


@pytest.fixture(scope="module")
def site(
    netboot_root: BootRoot, trixie_rom: Path, live_env: LiveEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    require_lab("bios")
    tmp = tmp_path_factory.mktemp("hooks-debian")
    shared = debian_mini()
    # the server's store: hard links to the e2e store's files, so version 2 is built here and the e2e store
    # keeps its fresh build as current
    built = dataclasses.replace(shared, store=linked_store(shared.store, tmp / "store"))
    root = live_boot_root(netboot_root, live_env, tmp / "boot")
    recipes = tmp / "recipes"
    (recipes / "bundles").mkdir(parents=True)
    (recipes / "debian-mini.yaml").write_text(RECIPE)
    (recipes / "bundles" / "hello.yaml").write_text(BUNDLE)
    with Lab(workdir=tmp / "lab") as lab:
        state = lab.workdir / "provision" / "state"  # LabServer's --state-dir: the repository is STATE/repo
        sync_seconds = bundles_sync(recipes, state, built.store)
        config = {
            **provision_config(lab),
            "image_store": str(built.store.root),
            "recipes_dir": str(recipes),
            "hooks": {"ssh_key": str(live_env.key.private_path)},  # the one key the live environment trusts
        }
        server = ProvisionServe.start(lab, root, config, dhcp="full")
        disk_size = built.version.index.disk_size + 64 * MiB
        pc = lab.add_pc("bios", firmware="bios", mac=MAC, rom=trixie_rom, disk_size=disk_size, memory=1024)
        watch = BootWatch(pc, IMAGING_STEPS, IMAGING_TIMEOUT, FAIL, exit_timeout=180)
        yield Site(lab, server, built, pc, watch, sync_seconds, state, recipes)
        for running in lab.pcs:
            running.stop()


def read_in_root(site: Site, disk: Path, path: str, *, recover: bool = False) -> str:
    """The content of ``path`` in the written root file system of ``disk`` (debugfs on a loop device; read-only
    unless ``recover``: the PC was killed while running, so e2fsck first replays the file system's journal,
    which debugfs does not read)."""
    index = site.built.version.index
    root = max(index.layout.partitions, key=lambda p: p.start)
    offset = root.start * index.sector_size
    mode = [] if recover else ["--read-only"]
    loop = subprocess.run(
        ["losetup", "--find", "--show", *mode, "--offset", str(offset), str(disk)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        if recover:
            fsck = subprocess.run(["e2fsck", "-p", loop], capture_output=True, text=True)
            assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr
        done = subprocess.run(["debugfs", "-R", f"cat {path}", loop], capture_output=True, text=True, check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    return done.stdout


def bundle_installed(run: dict[str, Any]) -> list[str]:
    """NAME=VERSION of what the bundle hook's last line says it installed."""
    [bundle] = [h for h in run["hooks"] if h["name"] == "bundle"]
    output = str(bundle["output"])
    found = re.findall(r"^PROVISION-BUNDLE-INSTALLED bundle=hello (.*)$", output, re.MULTILINE)
    assert found, output[-2000:]
    return str(found[-1]).split()


def test_imaged_hooks_and_bundle_ran(site: Site, timing: Timing) -> None:
    timing(f"debian-mini image ({site.built.status})", site.built.seconds)
    timing("bundles sync", site.sync_seconds)
    site.watch.result(timing, "bios imaging:")
    assert site.watch.exit_code == 0, site.pc.tail(40)
    run = only_run(site.server, MAC)
    assert (run["state"], run["image"], run["digest"]) == ("done", "debian-mini", site.built.version.digest), run
    hooks = run["hooks"]
    assert [h["name"] for h in hooks] == ["hostname", "identity", "bundle"], hooks
    for hook in hooks:
        assert hook["exit_code"] == 0 and not hook["timed_out"] and not hook.get("error"), hook
        timing(f"bios hook {hook['name']}", float(hook["seconds"]))
    assert any(item.startswith("hello=") for item in bundle_installed(run)), run["hooks"][-1]["output"]
    disk = site.pc.disk_path
    assert read_in_root(site, disk, "/etc/hostname") == f"{HOSTNAME}\n"
    assert read_in_root(site, disk, "/etc/machine-id").strip() == ""  # the image's and the identity hook's


def test_first_boot_reports_host_name_machine_id_and_bundle(site: Site, timing: Timing) -> None:
    site.watch.result()
    run = only_run(site.server, MAC)
    if run["state"] != "done":
        pytest.skip("not imaged (see test_imaged_hooks_and_bundle_ran)")
    pc = site.lab.power_on(site.pc)
    site.pc = pc
    again = BootWatch(pc, firstboot_steps(), BOOT_TIMEOUT, FAIL)
    again.result(timing, "bios own disk:")
    events = site.server.events(MAC)
    firstboot = [e["detail"] for e in events if e["kind"] == "firstboot"]
    assert len(firstboot) == 1, events
    [report] = firstboot
    assert (report["image"], report["firmware"], report["run"]) == ("debian-mini", "bios", run["id"]), report
    assert (report["hostname"], report["hostname_matches"]) == (HOSTNAME, True), report
    hello = [item for item in bundle_installed(run) if item.startswith("hello=")]
    assert hello and hello[0] in report["packages"], (hello, len(report["packages"]))
    assert any(p.startswith("openssh-server=") for p in report["packages"])
    failed_units = [line for line in pc.serial_text().splitlines() if "Failed to start" in line]
    assert failed_units == [], failed_units
    machine_id = report["machine_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id or ""), report
    pc.stop()  # killed: its journal is replayed before the disk is read
    assert read_in_root(site, pc.disk_path, "/etc/machine-id", recover=True).strip() == machine_id  # committed
    print(json.dumps({k: v for k, v in report.items() if k != "packages"}))


def test_debian_mini_rebuilt_in_place_with_one_package(site: Site, timing: Timing, tmp_path: Path) -> None:
    """Version 2 = debian-mini + ``tree``, built in place from version 1 (the served store's current): the goal,
    e2fsck, and no stale data in freed blocks."""
    site.watch.result()
    v1 = site.built.version
    store = site.built.store
    (tmp_path / "images").mkdir()
    definition = with_package(MINI, tmp_path / "images", ADDED)
    started = time.monotonic()
    result = build_image(
        definition, store, cache=DebCache(DEB_CACHE), workdir=tmp_path / "work", log_dir=tmp_path / "logs"
    )  # fmt: skip
    timing(f"debian-mini + {ADDED} built in place", time.monotonic() - started)
    v2 = result.version
    build = v2.index.provenance["build"]
    assert (result.mode, build["mode"], build["rebuilt_from"]) == ("in_place", "in_place", v1.ref), result.mode_reason
    current = store.current("debian-mini")
    assert current is not None and current.digest == v2.digest != v1.digest
    assert ADDED in result.packages and ADDED not in v1.index.provenance["packages"]
    assert v2.index.disk_size == v1.index.disk_size
    old = set(v1.index.unique_chunks())
    new = [sha for sha in v2.index.unique_chunks() if sha not in old]  # against version 1 only
    goal = Goal(len(new), len(v2.index.unique_chunks()), change_bytes(result.in_place["rsync"]))
    print(f"in place, debian-mini + {ADDED}: {goal.line()}; {len(v2.index.chunks)} chunks in all (holes included); "
          f"rsync: {result.in_place['rsync']}; freed blocks: {result.in_place['free_blocks']}")  # fmt: skip
    assert goal.new_chunks <= goal.by_change, goal.line()
    # the 5 % term with one chunk of slack: debian-mini + tree measured 8-9 new of 191 stored (9 is 5 %), where
    # the kernel puts the new small files varying by a chunk; the line printed above says whether it was met
    assert goal.new_chunks <= goal.by_share + 1, goal.line()
    checked = time.monotonic()
    raw = tmp_path / "v2.raw"
    export_previous(store, v2, raw)  # sparse, each chunk checked against its sha256
    try:
        code, output = e2fsck_root(raw, v2)
        assert code == 0, output
        free = stale_free_blocks(raw, v2)
        print(f"free blocks: {free.free_bytes / MiB:.1f} MiB, {free.read_bytes / MiB:.1f} MiB of them data in the "
              f"raw disk, {len(free.stale)} not zero (the update: {result.in_place['free_blocks']})")  # fmt: skip
        assert free.free_bytes > 0 and free.stale == [], free.stale[:20]
        assert free.last_free is not None
        plant(raw, v2, free.last_free, free.block_size)  # the check finds stale data where there is some
        assert stale_free_blocks(raw, v2).stale == [free.last_free]
    finally:
        raw.unlink()
    timing("in-place checks (export, e2fsck, free blocks)", time.monotonic() - checked)
    site.rebuilt = result


def test_the_pc_holding_version_1_is_reimaged_with_version_2_as_a_delta_and_boots(site: Site, timing: Timing) -> None:
    if site.rebuilt is None:
        pytest.skip("no version 2 (see test_debian_mini_rebuilt_in_place_with_one_package)")
    v1, v2 = site.built.version, site.rebuilt.version
    [first] = site.server.api(f"/api/v1/runs?mac={MAC}")
    if first["state"] != "done" or site.pc.running:
        pytest.skip("the PC does not hold version 1 (see the tests above)")
    (site.recipes / "debian-mini.yaml").write_text(RECIPE_V2)  # version 2 is the current: no hooks this time
    with Store(site.state / "provision.db") as db:
        db.operator_action(MAC, "reimage", "test")  # the dashboard's "re-image"
    pc = site.lab.power_on(site.pc)
    site.pc = pc
    BootWatch(pc, IMAGING_STEPS, IMAGING_TIMEOUT, FAIL, exit_timeout=180).result(timing, "bios re-imaging v2:")
    runs = site.server.api(f"/api/v1/runs?mac={MAC}")
    assert [r["id"] for r in runs[:-1]] == [first["id"]], runs
    run = runs[-1]
    assert (run["state"], run["image"], run["digest"]) == ("done", "debian-mini", v2.digest), run
    assert (run["held_run"], run["held_digest"], run["held_label"]) == (first["id"], v1.digest, v1.label), run
    assert run["verified_bytes"] == v2.index.mapped_bytes, run
    pairs = zip(v1.index.chunks, v2.index.chunks, strict=True)
    changed = [b for a, b in pairs if b.sha256 is not None and a != b]  # version 2's chunks not in place in v1
    assert run["predicted_bytes"] == sum(c.length for c in changed) > 0, run
    fetched, data = run["fetched_bytes"], run["verified_bytes"]
    print(f"delta re-imaging v1 -> v2: predicted {run['predicted_download']} bytes ({run['predicted_bytes']} to "
          f"write), fetched {fetched} of {data} verified ({100 * fetched / data:.2f} %), written "
          f"{run['bytes_written']}")  # fmt: skip
    assert 0 < fetched <= DELTA_SHARE * data, run
    pc.wait_exit(30)
    pc = site.lab.power_on(pc)
    site.pc = pc
    BootWatch(pc, firstboot_steps(), BOOT_TIMEOUT, FAIL).result(timing, "bios own disk (v2):")
    firstboot = [e["detail"] for e in site.server.events(MAC) if e["kind"] == "firstboot"]
    assert len(firstboot) == 2, firstboot
    report = firstboot[-1]
    assert (report["image"], report["run"]) == ("debian-mini", run["id"]), report
    assert any(p.startswith(f"{ADDED}=") for p in report["packages"]), report["packages"]
    pc.stop()


def test_the_server_logged_no_error(site: Site) -> None:
    site.watch.result()
    assert site.server.problems() == [], site.server.problems()
