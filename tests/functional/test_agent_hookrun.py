"""The hook runner for real: a GPT disk file whose ext4 root is a tiny busybox system (busybox-static from the
.deb cache, its applets as symlinks), mounted by ``provision.agent.hookrun`` with real mount, losetup and
chroot; ``#!/bin/sh`` hooks really run in the chroot (or, ``live``, here with PROVISION_ROOT).

Each case reads the root file system back with debugfs on an offset loop device of its own, and after every
case nothing the runner made stays: no mount under /run/provision, no loop device over the disk, no folder.
Cases: a hook that changes the root (its environment is exactly the clean one), a failing hook, a hook past its
timeout (killed with its children), hostile values (shell syntax, quotes, newlines, non-ASCII, non-UTF-8 bytes)
that arrive verbatim and execute nothing, a live hook copying a file into the target, a hook that leaves a
process in its group, a daemon out of it and a mount inside the target, the disk as a loop block device, and
the runner started the way the server starts it (its command through a shell, the job on stdin).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.agent.hookrun import EXIT_BAD_JOB, EXIT_RESULT, Settings, run_job
from provision.wire.hooks import HOOK_COMMAND, HookJob, HookResult
from tests.support.agent import loop
from tests.support.hookrun import (
    SH,
    busybox_static,
    debugfs_cat,
    debugfs_ls,
    job,
    loops_of,
    make_hook_disk,
    mounts_under,
)
from tests.support.paths import REPO

TOOLS = ("losetup", "mke2fs", "debugfs", "mount", "umount", "chroot")
BUSYBOX = busybox_static()

NEEDS = f"needs root and {', '.join(TOOLS)}"
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS), reason=NEEDS),
    pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static in the .deb cache (tests/support/paths.py)"),
]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """The busybox root disk; afterwards nothing of the runner may stay (mounts, loop devices, folders)."""
    base = Path("/run/provision")
    before = set(mounts_under(str(base))), set(base.glob("hook-*"))
    assert BUSYBOX is not None
    path = make_hook_disk(tmp_path, BUSYBOX, {"etc/motd": b"kept\n"})
    yield path
    assert set(mounts_under(str(base))) == before[0], "a mount of the runner stayed"
    assert set(base.glob("hook-*")) == before[1], "a folder of the runner stayed"
    assert loops_of(path) == "", "a loop device stayed attached"


def run(hook: HookJob) -> HookResult:
    started = time.monotonic()
    result = run_job(hook).result
    print(f"\n{hook.name} ({hook.where}): {time.monotonic() - started:.3f} s, {result.seconds} s recorded")
    return result


def test_a_target_hook_changes_the_root_from_a_chroot(disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISION_LEAK", "the runner's environment")
    script = SH + (
        'echo "was $(cat /etc/hostname)"\n'
        'echo "$PROVISION_PARAM_HOSTNAME" > "$PROVISION_ROOT/etc/hostname"\n'
        "env | sort > /root/env\n"
        "echo to stderr >&2\n"
        "ls /dev/null /proc/self/mounts /sys/kernel >/dev/null && echo binds ok\n"
        'touch /run/trace && echo "uid $(id -u)"\n'
    )
    result = run(job(script, name="hostname", device=str(disk), env={"PROVISION_PARAM_HOSTNAME": "poste-42"}))
    assert (result.exit_code, result.timed_out, result.error, result.unmounted) == (0, False, None, True)
    assert result.output == "was poste-01\nto stderr\nbinds ok\nuid 0\n" and result.ok
    assert debugfs_cat(disk, "/etc/hostname") == b"poste-42\n" and debugfs_cat(disk, "/etc/motd") == b"kept\n"
    env = dict(line.split("=", 1) for line in (debugfs_cat(disk, "/root/env") or b"").decode().splitlines())
    env.pop("PWD", None), env.pop("SHLVL", None)  # the shell's own
    assert env == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                   "LANG": "C.UTF-8", "PROVISION_PARAM_HOSTNAME": "poste-42", "PROVISION_ROOT": "/"}  # fmt: skip
    assert debugfs_ls(disk, "/run") == []  # the script and /run/trace were on the tmpfs: no trace in the system


def test_a_failing_hook_is_recorded_with_its_output(disk: Path) -> None:
    result = run(job(SH + "echo trying; echo 'no such user' >&2; exit 3\n", name="account", device=str(disk)))
    assert (result.exit_code, result.timed_out, result.error, result.unmounted) == (3, False, None, True)
    assert result.output == "trying\nno such user\n" and result.output_bytes == 20 and not result.ok


def test_a_hook_past_its_timeout_is_killed_with_its_children(disk: Path) -> None:
    script = SH + "echo before\nsleep 60 &\nsleep 60\necho never\n"
    started = time.monotonic()
    result = run(job(script, name="slow", device=str(disk), timeout=1))
    assert (result.exit_code, result.timed_out, result.error, result.unmounted) == (None, True, None, True)
    assert result.output == "before\n[provision-hookrun: timed out after 1 s: SIGTERM to the hook's process group]\n"
    assert time.monotonic() - started < 10 and not result.ok


HOSTILE = {
    "SEMICOLON": "; rm -rf / #",
    "SUBST": "$(touch /pwned)",
    "BACKQUOTE": "`touch /pwned-too`",
    "QUOTES": 'it\'s "quoted" \\ back',
    "NEWLINES": "line one\nline two\n",
    "GLOB": "${IFS}$PATH*?[a] -rf --no-preserve-root",
    "UNICODE": "Élève 中文 😀",
    "NOT_UTF8": "caf\udce9 \udcff\udcfe",  # bytes e9, ff, fe: carried as surrogate escapes in the JSON
}


def test_hostile_values_arrive_verbatim_and_execute_nothing(disk: Path) -> None:
    env = {f"PROVISION_PARAM_{k}": v for k, v in HOSTILE.items()}
    lines = "".join(f'printf %s "$PROVISION_PARAM_{k}" > /root/{k}\n' for k in HOSTILE)
    result = run(job(SH + "mkdir -p /root\n" + lines + "ls /\n", name="hostile", device=str(disk), env=env))
    assert result.ok and result.unmounted, result
    for key, value in HOSTILE.items():
        assert debugfs_cat(disk, f"/root/{key}") == os.fsencode(value), key
    names = debugfs_ls(disk, "/")
    assert "pwned" not in names and "pwned-too" not in names and {"bin", "etc", "root"} <= set(names)
    assert not Path("/pwned").exists() and not Path("/pwned-too").exists()
    assert debugfs_cat(disk, "/etc/motd") == b"kept\n"


def test_a_live_hook_sees_provision_root_and_writes_into_the_target(disk: Path, tmp_path: Path) -> None:
    firmware = tmp_path / "rtl8168h-2.fw"
    firmware.write_bytes(bytes(range(256)) * 4)
    script = SH + (
        'echo "root: $PROVISION_ROOT"\n'
        'mkdir -p "$PROVISION_ROOT/lib/firmware/rtl_nic"\n'
        'cp "$FIRMWARE" "$PROVISION_ROOT/lib/firmware/rtl_nic/"\n'
        'test -c "$PROVISION_ROOT/dev/null" && test -d "$PROVISION_ROOT/proc/self" && echo bound\n'
    )
    result = run(job(script, name="firmware", where="live", device=str(disk), env={"FIRMWARE": str(firmware)}))
    assert result.ok and result.unmounted, result
    root = result.output.splitlines()[0].removeprefix("root: ")
    assert root.startswith("/run/provision/hook-") and root.endswith("/root") and result.output.endswith("bound\n")
    assert debugfs_cat(disk, "/lib/firmware/rtl_nic/rtl8168h-2.fw") == firmware.read_bytes()


def test_processes_and_mounts_left_behind_are_cleaned_up(disk: Path) -> None:
    script = SH + (
        "sleep 60 &\n"  # in the hook's process group
        "setsid sleep 61 < /dev/null > /dev/null 2>&1 &\n"  # a daemon: out of the group, its root in the target
        "mount -t tmpfs scratch /mnt && echo mounted\n"  # a mount the hook forgets inside the target
    )
    result = run(job(script, name="leaky", device=str(disk)))
    assert (result.exit_code, result.error, result.unmounted) == (0, None, True), result
    assert result.output.startswith("mounted\n")
    assert "processes the hook started were still running when it exited" in result.output
    assert "the hook left 1 mounts in the target (/mnt): unmounted" in result.output
    assert "processes still using the target were killed (SIGKILL): " in result.output  # the daemon
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", "sleep 6[01]$"], capture_output=True, text=True).stdout.split()
    assert [pid for pid in left if Path(f"/proc/{pid}/root").resolve().as_posix().startswith("/run/provision")] == []


def test_a_loop_block_device_without_partition_nodes(disk: Path) -> None:
    with loop(disk) as device:  # no --partscan: the runner finds no node and takes an offset loop over it
        result = run(job(SH + "echo block > /etc/block\n", name="block", device=device))
        assert result.ok and result.unmounted, result
        assert loops_of(Path(device)) == ""  # its own offset loop over the device is detached
    assert debugfs_cat(disk, "/etc/block") == b"block\n"


def server_command(data: bytes) -> subprocess.CompletedProcess[bytes]:
    """``HOOK_COMMAND`` through a shell, as dropbear runs it, with this venv's python3 first on PATH."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(["sh", "-c", HOOK_COMMAND], input=data, capture_output=True, env=env, cwd=REPO,
                          timeout=120, check=False)  # fmt: skip


def test_run_the_way_the_server_runs_it(disk: Path) -> None:
    hook = job(SH + 'echo "hello $PROVISION_PARAM_WHO"\n', name="hello", device=str(disk),
               env={"PROVISION_PARAM_WHO": "`reboot` é"})  # fmt: skip
    done = server_command(json.dumps(hook.to_dict()).encode())
    assert done.returncode == EXIT_RESULT, done.stderr.decode()
    result = HookResult.from_dict(json.loads(done.stdout))
    assert (result.name, result.exit_code, result.output, result.unmounted) == ("hello", 0, "hello `reboot` é\n", True)
    assert b"Traceback" not in done.stderr

    bad = server_command(b'{"name": "hello", "where": "target"}')
    assert bad.returncode == EXIT_BAD_JOB and b"Traceback" not in bad.stderr
    refused = json.loads(bad.stdout)
    assert refused["name"] == "hello" and "script: Field required" in refused["error"]


def test_the_settings_record_names_the_disk(disk: Path, tmp_path: Path) -> None:
    record = tmp_path / "target"
    record.write_text(f"{disk}\n")
    result = run_job(job(SH + "echo recorded > /etc/recorded\n"), Settings(record=record)).result
    assert result.ok and result.unmounted, result
    assert debugfs_cat(disk, "/etc/recorded") == b"recorded\n"
