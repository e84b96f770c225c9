"""The live environment built for real (root, mmdebstrap, kmod, the Debian archive), then unpacked and checked.

- the size goal: kernel + initramfs <= 120 MiB; live.json matches the files;
- a second ``ensure_live`` reuses the output; a copy to a new folder comes from the build cache;
- inside the unpacked initramfs (chroot): python3 imports requests, zstandard and the agent, whose
  bytecode is valid for that interpreter (nothing is recompiled); the tools the agent and /init run;
  ``authorized_keys`` holds exactly the server's key; ``modprobe`` resolves real PCI/virtio aliases to
  r8169, e1000e, ahci, nvme, virtio_net from ``modules.alias``; signed modules only;
- the /init functions, sourced in the tree's busybox: hostile kernel arguments are dropped, addresses
  and names are validated; every script parses.

The build itself is the session fixture ``live_env`` (tests/conftest.py): the first run takes a few
minutes (mmdebstrap, zstd -19), later runs reuse it while the inputs do not change.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import zstandard

from provision.bootfiles import sha256_file
from provision.initramfs import alias_modules
from provision.live import SIZE_GOAL, ensure_live
from provision.live.manifest import LIVE_JSON
from provision.live.packages import REQUIRED_PROGRAMS
from provision.sshkeys import parse_public_key
from tests.support.live import LiveEnv
from tests.support.paths import DEB_CACHE

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio (Debian package cpio) unpacks the initrd")

ALIASES = {  # real modaliases of devices the live environment must drive
    "r8169": "pci:v000010ECd00008168sv00001028sd000004B2bc02sc00i00",  # RTL8111/8168 (OptiPlex, ESPRIMO)
    "e1000e": "pci:v00008086d000015B8sv00001028sd000007A1bc02sc00i00",  # I219-V
    "ahci": "pci:v00008086d0000A352sv00001028sd0000085Abc01sc06i01",  # Intel SATA AHCI
    "nvme": "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02",  # Samsung NVMe
    "virtio_net": "virtio:d00000001v00001AF4",
    "tg3": "pci:v000014E4d00001684sv0000103Csd00008175bc02sc00i00",  # BCM5762 (EliteDesk)
    "xhci_pci": "pci:v00008086d0000A36Dsv00001028sd0000085Abc0Csc03i30",
    "usb_storage": "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00",
}


@pytest.fixture(scope="module")
def unpacked(live_env: LiveEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The initramfs unpacked with GNU cpio (a reader other than the kernel's) into a folder."""
    root = tmp_path_factory.mktemp("live-root")
    argv = ["cpio", "-idm", "--quiet", "--no-absolute-filenames"]
    with subprocess.Popen(argv, cwd=root, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        with live_env.result.initrd.open("rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
            shutil.copyfileobj(reader, proc.stdin, 1 << 20)
        proc.stdin.close()
        errors = proc.stderr.read()
    assert proc.returncode == 0, errors
    return root


def chroot(root: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/local/bin:/usr/sbin:/usr/bin", "LC_ALL": "C.UTF-8", **(env or {})},
    )


def test_size_goal_and_manifest(live_env: LiveEnv):
    m = live_env.result.manifest
    out = live_env.out
    assert m.total_size <= SIZE_GOAL, f"{m.total_size / 2**20:.1f} MiB > {SIZE_GOAL >> 20} MiB"
    assert m.within_goal
    assert sha256_file(out / "vmlinuz") == m.vmlinuz.sha256 and (out / "vmlinuz").stat().st_size == m.vmlinuz.size
    assert sha256_file(out / "initrd.img") == m.initrd.sha256
    data = json.loads((out / LIVE_JSON).read_text())
    assert data["kernel"]["release"] == m.kernel_release and data["kernel"]["package"].startswith("linux-image-")
    assert data["modules"]["count"] == len(m.modules) > 100
    assert {"python3", "python3-requests", "python3-zstandard", "dropbear-bin", "busybox", "kmod"} <= set(m.packages)
    assert data["agent"]["sha256"] == m.agent_sha256 and "provision/agent/__init__.py" in m.agent_files
    assert data["build_seconds"] > 0 and data["within_goal"] is True
    assert data["files"]["initrd.img"]["compression"].startswith("zstd-")
    with (out / "initrd.img").open("rb") as handle:
        assert handle.read(4) == b"\x28\xb5\x2f\xfd"  # a zstd frame: Debian's kernel has CONFIG_RD_ZSTD
    print(f"\nlive: vmlinuz {m.vmlinuz.size / 2**20:.1f} MiB + initrd {m.initrd.size / 2**20:.1f} MiB")


def test_the_kernel_is_the_boot_roots_signed_kernel(live_env: LiveEnv):
    data = (live_env.out / "vmlinuz").read_bytes()
    assert data[:2] == b"MZ"  # a PE image (EFI stub), which shim verifies
    assert live_env.result.manifest.kernel_release.encode() in data


def test_ensure_reuses_and_copies_from_the_build_cache(live_env: LiveEnv, tmp_path: Path):
    again = ensure_live(live_env.out, deb_cache_dir=DEB_CACHE)
    assert again.reused and again.manifest.inputs == live_env.result.manifest.inputs
    copy = ensure_live(tmp_path / "elsewhere", deb_cache_dir=DEB_CACHE)
    assert copy.reused and copy.manifest.inputs == live_env.result.manifest.inputs
    # the kept build of these inputs, intact (builds are not bit-for-bit reproducible: an earlier build of the
    # same inputs may be the one kept, so the bytes are checked against the copy's own manifest)
    assert sha256_file(tmp_path / "elsewhere" / "initrd.img") == copy.manifest.initrd.sha256
    assert (tmp_path / "elsewhere" / LIVE_JSON).is_file()


def test_python_requests_zstandard_and_the_agent_import(unpacked: Path):
    done = chroot(unpacked, "python3", "-c", "import requests, zstandard, ssl; print(requests.__version__)")
    assert done.returncode == 0, done.stderr
    agent = "import provision.agent, provision.agent.writer, provision.errors; print(provision.agent.__file__)"
    done = chroot(unpacked, "python3", "-c", agent, env={"PYTHONPATH": "/opt/provision"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/opt/provision/provision/agent/__init__.py"
    if (unpacked / "opt/provision/provision/agent/__main__.py").is_file():
        done = chroot(unpacked, "python3", "-m", "provision.agent", "--help", env={"PYTHONPATH": "/opt/provision"})
        assert done.returncode == 0, done.stderr


def test_the_zstandard_calls_of_the_agent_work_with_debians_version(unpacked: Path):
    code = (
        "import zstandard\n"
        "data = bytes(range(256)) * 4096\n"
        "frame = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)\n"
        "assert zstandard.frame_content_size(frame) == len(data)\n"
        "buf = bytearray(len(data))\n"
        "with zstandard.ZstdDecompressor().stream_reader(frame, read_across_frames=False) as reader:\n"
        "    n = reader.readinto(memoryview(buf))\n"
        "assert bytes(buf[:n]) == data[:n] and n > 0\n"
    )
    done = chroot(unpacked, "python3", "-c", code)
    assert done.returncode == 0, done.stderr


def test_bytecode_is_valid_for_the_trees_python(unpacked: Path):
    """Importing the agent and requests recompiles nothing (unchecked-hash .pyc of the right magic)."""
    caches = [unpacked / "opt/provision/provision/agent/__pycache__", unpacked / "usr/lib/python3/dist-packages"]
    assert list(caches[0].glob("*.cpython-3*.pyc")), "agent not compiled"

    def pycs() -> dict[str, float]:
        found: dict[str, float] = {}
        for base in caches:
            found.update({str(p): p.stat().st_mtime for p in base.rglob("*.pyc")})
        return found

    before = pycs()
    done = chroot(unpacked, "python3", "-c", "import provision.agent, requests", env={"PYTHONPATH": "/opt/provision"})
    assert done.returncode == 0, done.stderr
    assert pycs() == before


def test_tools_are_there(unpacked: Path):
    for rel in REQUIRED_PROGRAMS:
        assert os.path.lexists(unpacked / rel), rel
    for applet in ("udhcpc", "cttyhack", "vi"):
        assert (unpacked / "usr/local/bin" / applet).readlink() == Path("/usr/bin/busybox")
    for argv in (["lsblk", "--version"], ["sgdisk", "--version"], ["smartctl", "--version"], ["dmidecode", "-V"]):
        done = chroot(unpacked, *argv)
        assert done.returncode == 0, (argv, done.stderr)
    # the erasure tools run (their libraries kept: libnvme, libjson-c, libsgutils2) and say their versions
    for argv, says in (
        (["nvme", "version"], "nvme version"),
        (["hdparm", "-V"], "hdparm v"),
        (["sg_inq", "-V"], "Version string"),  # on stderr
        (["rtcwake", "-V"], "util-linux"),
    ):
        done = chroot(unpacked, *argv)
        assert done.returncode == 0 and says in done.stdout + done.stderr, (argv, done.stdout, done.stderr)
    done = chroot(unpacked, "dropbear", "-V")
    assert "Dropbear" in done.stdout + done.stderr
    assert not (unpacked / "usr/share/man").exists() and not (unpacked / "usr/bin/perl").exists()
    assert not (unpacked / "usr/lib/python3.11/test").exists() and (unpacked / "usr/lib/python3.11/email").is_dir()


def test_authorized_keys_hold_exactly_the_servers_key(live_env: LiveEnv, unpacked: Path):
    keys = unpacked / "root/.ssh/authorized_keys"
    assert keys.read_text() == live_env.key.public_line + "\n"
    assert parse_public_key(keys.read_text()) == live_env.key.public_line
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE((unpacked / "root/.ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE((unpacked / "root").stat().st_mode) == 0o700
    assert not list((unpacked / "etc").glob("dropbear/*_host_key"))  # host keys are made at boot
    assert live_env.result.manifest.authorized_key == live_env.key.fingerprint


def test_modules_resolve_by_alias(live_env: LiveEnv, unpacked: Path):
    release = live_env.result.manifest.kernel_release
    base = unpacked / "usr/lib/modules" / release
    names = alias_modules((base / "modules.alias").read_text())
    for module, alias in ALIASES.items():
        assert module in names
        done = chroot(unpacked, "modprobe", "-S", release, "-R", alias)
        assert done.returncode == 0 and module in done.stdout.split(), (module, done.stdout, done.stderr)
    done = chroot(unpacked, "modprobe", "-S", release, "--show-depends", "ext4")
    assert done.returncode == 0 and "crc32c" in done.stdout and "jbd2" in done.stdout, done.stdout + done.stderr
    for ko in base.rglob("*.ko"):
        assert ko.read_bytes().endswith(b"~Module signature appended~\n"), f"{ko} is not signed"
    firmware = sorted(
        p.relative_to(unpacked / "usr/lib/firmware").as_posix()
        for p in (unpacked / "usr/lib/firmware").rglob("*")
        if p.is_file()
    )
    assert firmware == live_env.result.manifest.firmware
    assert any(name.startswith("rtl_nic/") for name in firmware) and any(name.startswith("bnx2/") for name in firmware)


def test_scripts_parse(unpacked: Path):
    for script in ("/init", "/usr/lib/provision/live-functions.sh", "/usr/lib/provision/udhcpc.script"):
        done = chroot(unpacked, "/usr/bin/busybox", "sh", "-n", script)
        assert done.returncode == 0, (script, done.stderr)


FUNCTIONS = ". /usr/lib/provision/live-functions.sh; mkdir -p /run/provision; "


def test_kernel_arguments_are_validated(unpacked: Path):
    good = "console=ttyS0 provision.mac=52:54:00:AB:cd:01 provision.server=http://198.18.0.1:8080 provision.token=t"
    hostile = "provision.mac=52:54:00:ab:cd:01;reboot provision.server=http://x/$(reboot) * provision.token=`id`"
    results = {}
    for name, text in (("good", good), ("hostile", hostile)):
        (unpacked / "tmp" / "cmdline").write_text(text + "\n")
        script = FUNCTIONS + 'kernel_args /tmp/cmdline; printf "[%s|%s]\\n" "$KERNEL_MAC" "$KERNEL_SERVER"'
        done = chroot(unpacked, "/usr/bin/busybox", "sh", "-c", script)
        assert done.returncode == 0, done.stderr
        results[name] = done.stdout
    assert results["good"].strip() == "[52:54:00:ab:cd:01|http://198.18.0.1:8080]"
    assert results["hostile"].splitlines()[-1] == "[|]"
    assert "ignoring a malformed provision.mac=" in results["hostile"]
    assert "reboot" not in results["hostile"]  # the value is never echoed


@pytest.mark.parametrize(
    ("function", "good", "bad"),
    [
        ("valid_ipv4", ["10.0.2.15", "198.18.0.1", "0.0.0.0", "255.255.255.255"],
         ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", ".1.2.3", "1.2.3.4;reboot", "1.2.3.4 5", "a.b.c.d",
          "1234.1.1.1"]),
        ("valid_mac", ["52:54:00:12:34:56", "ff:ff:ff:ff:ff:ff"],
         ["", "52:54:00:12:34", "52-54-00-12-34-56", "52:54:00:12:34:5g", "52:54:00:12:34:56:78", "*"]),
        ("valid_url", ["http://198.18.0.1:8080", "https://server.example/provision"],
         ["", "http://", "ftp://x", "http://x/$(id)", "http://x;reboot", "http://x y", "http://x/`id`"]),
        ("valid_ifname", ["eth0", "enp0s3", "usb0", "br-lab.1"], ["", "eth0;x", "a/b", "x" * 16, "eth 0"]),
    ],
)  # fmt: skip
def test_validators(unpacked: Path, function: str, good: list[str], bad: list[str]):
    script = FUNCTIONS + 'for v in "$@"; do if ' + function + ' "$v"; then echo "+$v"; else echo "-$v"; fi; done'
    done = chroot(unpacked, "/usr/bin/busybox", "sh", "-c", script, "sh", *good, *bad)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"+{v}" for v in good] + [f"-{v}" for v in bad]


def test_udhcpc_script_refuses_a_malformed_address_before_touching_anything(unpacked: Path):
    done = subprocess.run(
        ["chroot", str(unpacked), "/usr/lib/provision/udhcpc.script", "bound"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin", "interface": "lo", "ip": "10.0.0.1;reboot", "mask": "24"},
    )
    assert done.returncode == 1 and "refused a malformed address" in done.stdout
    done = subprocess.run(
        ["chroot", str(unpacked), "/usr/lib/provision/udhcpc.script", "bound"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin", "interface": "lo;x", "ip": "10.0.0.1"},
    )
    assert done.returncode == 1
