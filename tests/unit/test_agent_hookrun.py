"""The hook runner (provision.agent.hookrun, hookmount) with fake mount tools (tests.support.hookrun.FakeMounts)
and a fake start of the hook (FakeSpawn runs a harmless ``sh -c`` instead): the job read from stdin and every
way it can be refused (exit 2, a result with ``error``, no traceback), the exact mount and unmount argument
lists, the chroot argv and the clean environment, the rule that everything is unmounted in reverse order after
a success, a failure, a timeout or an exception, lazy unmounts and what stays, the root found as grow finds it
(no GPT, no root, not ext4 refused before any mount), the target record, symlinked mount points, processes
left in the target, a signal to the runner, and an answer that always fits what the server reads."""

from __future__ import annotations

import io
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provision.agent.hookmount import kill_target_users, mount_points
from provision.agent.hookproc import BASE_ENV, Output
from provision.agent.hookrun import (
    EXIT_BAD_JOB,
    EXIT_NO_RESULT,
    EXIT_RESULT,
    MAX_JOB,
    BadJob,
    Ran,
    Settings,
    main,
    read_job,
    run_job,
)
from provision.builder.layout import BIOS_BOOT, ESP, LINUX_SWAP, NewPartition
from provision.images.partitions import read_partition_table
from provision.wire.hooks import MAX_ANSWER, HookJob, HookResult
from tests.support.agent import make_grow_disk
from tests.support.hookrun import SH, FakeMounts, FakeSpawn, job

MiB = 1 << 20


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_grow_disk(tmp_path / "disk.img", None)


@pytest.fixture
def mounts(tmp_path: Path) -> FakeMounts:
    return FakeMounts(tmp_path / "mountinfo")


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """main() installs handlers for SIGTERM, SIGHUP and SIGINT: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def settings(tmp_path: Path, mounts: FakeMounts, spawn: Any, **changes: Any) -> Settings:
    (tmp_path / "proc").mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "run": mounts, "spawn": spawn, "record": tmp_path / "target", "base": tmp_path / "run-provision",
        "mountinfo": mounts.mountinfo, "proc_root": tmp_path / "proc", "users_wait": 0.0, "grace": 0.5,
    }  # fmt: skip
    return Settings(**{**values, **changes})


def root_range(path: Path) -> tuple[int, int]:
    with path.open("rb") as f:
        root = read_partition_table(f, path.stat().st_size).partitions[-1]
    return root.start * 512, root.size * 512


def mount_calls(root: str, disk: Path) -> list[list[str]]:
    offset, size = root_range(disk)
    return [
        ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), str(disk)],
        ["mount", "-t", "ext4", "--make-private", "/dev/loop9", root],
        ["mount", "--rbind", "--make-rslave", "/dev", f"{root}/dev"],
        ["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{root}/proc"],
        ["mount", "--rbind", "--make-rslave", "/sys", f"{root}/sys"],
        ["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", f"{root}/run"],
    ]


def unmount_calls(root: str) -> list[list[str]]:
    return [["umount", "--recursive", f"{root}/{p}"] for p in ("run", "sys", "proc", "dev")] + [
        ["umount", "--recursive", root], ["losetup", "-d", "/dev/loop9"]
    ]  # fmt: skip


def all_clean(mounts: FakeMounts, tmp_path: Path) -> None:
    """Nothing of the runner stays: no mount, no loop device, no folder."""
    assert mounts.ours() == [] and mounts.calls[-1] == ["losetup", "-d", "/dev/loop9"]
    assert list((tmp_path / "run-provision").iterdir()) == []


# ---------------------------------------------------------------------------------------- a target hook
def test_a_target_hook_is_mounted_bound_run_in_a_chroot_and_unmounted_in_reverse(
    tmp_path: Path, disk: Path, mounts: FakeMounts
) -> None:
    spawn = FakeSpawn(("sh", "-c", "echo ran; echo oops >&2; exit 3"))
    script = SH + "echo hi > /etc/hi\n"
    ran = run_job(job(script, device=str(disk), env={"PROVISION_PARAM_X": "1"}), settings(tmp_path, mounts, spawn))
    result = ran.result
    assert (result.exit_code, result.timed_out, result.unmounted, result.error) == (3, False, True, None)
    assert (result.output, result.output_bytes, result.ok) == ("ran\noops\n", 9, False)
    root = mounts.calls[1][-1]
    assert Path(root).parent.parent == tmp_path / "run-provision" and Path(root).parent.name.startswith("hook-")
    assert mounts.calls == mount_calls(root, disk) + unmount_calls(root)
    [(argv, options)] = spawn.calls
    assert argv == ["chroot", root, "/run/provision-hook/test-hook"]
    assert options["env"] == {**BASE_ENV, "PROVISION_PARAM_X": "1", "PROVISION_ROOT": "/"}
    assert options["start_new_session"] is True and options["cwd"] == "/" and "shell" not in options
    assert (options["stdin"], options["stdout"], options["stderr"]) == (
        subprocess.DEVNULL, subprocess.PIPE, subprocess.STDOUT
    )  # fmt: skip
    assert spawn.scripts == [(script.encode(), 0o700)]  # on the target's /run: the fresh tmpfs
    all_clean(mounts, tmp_path)


def test_a_live_hook_runs_in_the_live_environment_with_provision_root(
    tmp_path: Path, disk: Path, mounts: FakeMounts
) -> None:
    spawn = FakeSpawn()
    ran = run_job(job(SH + "ls $PROVISION_ROOT\n", where="live", device=str(disk)), settings(tmp_path, mounts, spawn))
    assert ran.result.ok and ran.result.output == "ran\n"
    root = mounts.calls[1][-1]
    assert mounts.calls == mount_calls(root, disk) + unmount_calls(root)  # mounted and bound the same way
    [(argv, options)] = spawn.calls
    assert argv == [str(Path(root).parent / "script" / "test-hook")]
    assert options["env"] == {**BASE_ENV, "PROVISION_ROOT": root}
    assert spawn.scripts == [((SH + "ls $PROVISION_ROOT\n").encode(), 0o700)]
    all_clean(mounts, tmp_path)


class Boom(RuntimeError):
    pass


def broken_spawn(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    raise Boom("a bug in the runner")


@pytest.mark.parametrize(
    ("case", "spawn", "timeout", "expected"),
    [
        ("fails", FakeSpawn(("sh", "-c", "echo no; exit 3")), 30, (3, False, None)),
        ("times out", FakeSpawn(("sh", "-c", "echo slow; sleep 30")), 1, (None, True, None)),
        ("cannot start", FakeSpawn(error=FileNotFoundError(2, "No such file or directory", "chroot")), 30,
         (None, False, "cannot start chroot for /run/provision-hook/test-hook: No such file or directory")),
        ("an exception", broken_spawn, 30, (None, False, "the hook runner failed: Boom: a bug in the runner")),
    ],
)  # fmt: skip
def test_everything_is_unmounted_after_a_failure_a_timeout_or_an_exception(
    tmp_path: Path, disk: Path, mounts: FakeMounts, case: str, spawn: Any, timeout: int, expected: tuple[Any, ...]
) -> None:
    ran = run_job(job(SH, device=str(disk), timeout=timeout), settings(tmp_path, mounts, spawn))
    result = ran.result
    assert (result.exit_code, result.timed_out, result.error) == expected and result.unmounted
    root = mounts.calls[1][-1]
    assert mounts.calls == mount_calls(root, disk) + unmount_calls(root)
    all_clean(mounts, tmp_path)


@pytest.mark.parametrize("half", [False, True])
def test_a_mount_that_fails_undoes_the_earlier_ones_and_runs_nothing(tmp_path: Path, disk: Path, half: bool) -> None:
    mounts = FakeMounts(tmp_path / "mountinfo", half_mount="sys" if half else "", fail_mount="" if half else "sys")
    spawn = FakeSpawn()
    result = run_job(job(SH, device=str(disk)), settings(tmp_path, mounts, spawn)).result
    root = mounts.calls[1][-1]
    why = "propagation failed" if half else "mount failed: no such"
    assert result.error == (
        f"{disk}: mount --rbind --make-rslave /sys {root}/sys: exit status 32 (mount failed): mount: {root}/sys: {why}"
    )
    assert (result.exit_code, result.unmounted, spawn.calls) == (None, True, [])
    sys_undone = [  # mounted, but perhaps not a slave: made one before its recursive unmount
        ["mount", "--make-rslave", f"{root}/sys"], ["umount", "--recursive", f"{root}/sys"]
    ] if half else []  # fmt: skip
    assert mounts.calls == mount_calls(root, disk)[:5] + sys_undone + [
        ["umount", "--recursive", f"{root}/proc"], ["umount", "--recursive", f"{root}/dev"],
        ["umount", "--recursive", root], ["losetup", "-d", "/dev/loop9"],
    ]  # fmt: skip
    all_clean(mounts, tmp_path)


def test_a_busy_root_is_unmounted_lazily_and_unmounted_says_false(tmp_path: Path, disk: Path) -> None:
    mounts = FakeMounts(tmp_path / "mountinfo", busy=["root"])
    result = run_job(job(SH, device=str(disk)), settings(tmp_path, mounts, FakeSpawn())).result
    root = mounts.calls[1][-1]
    assert (result.exit_code, result.unmounted, result.error) == (0, False, None)
    assert ["umount", "--recursive", "--lazy", root] in mounts.calls
    assert result.output == (
        "ran\n"
        f"[provision-hookrun: {disk}: umount --recursive {root}: exit status 32 (unmount failed): "
        f"umount: {root}: target is busy.]\n"
        f"[provision-hookrun: {root}: unmounted lazily (detached; still in use)]\n"
    )
    all_clean(mounts, tmp_path)  # detached: the folder could go


def test_a_mount_nothing_removes_keeps_the_folder_and_says_so(tmp_path: Path, disk: Path) -> None:
    mounts = FakeMounts(tmp_path / "mountinfo", stuck=["proc"])
    result = run_job(job(SH, device=str(disk)), settings(tmp_path, mounts, FakeSpawn())).result
    root = mounts.calls[1][-1]
    workdir = Path(root).parent
    assert (result.exit_code, result.unmounted) == (0, False)
    assert f"umount --recursive --lazy {root}/proc: exit status 32 (lazy unmount failed)" in result.output
    assert f"[provision-hookrun: still mounted after unmounting: {root}, {root}/proc]" in result.output
    assert f"[provision-hookrun: {workdir} kept: something is mounted under it ({root}, {root}/proc)]" in result.output
    assert workdir.is_dir() and mounts.ours() == [root, f"{root}/proc"]  # never removed through a mount
    assert mounts.calls[-1] == ["losetup", "-d", "/dev/loop9"]  # the loop device is still detached (autoclear)


def test_a_loop_device_that_stays_attached_says_unmounted_false(tmp_path: Path, disk: Path) -> None:
    mounts = FakeMounts(tmp_path / "mountinfo", detach_fails=True)
    result = run_job(job(SH, device=str(disk)), settings(tmp_path, mounts, FakeSpawn())).result
    assert (result.exit_code, result.unmounted) == (0, False)
    assert "losetup -d /dev/loop9: exit status 1 (loop device left attached)" in result.output


def test_mounts_the_hook_left_in_the_target_are_unmounted(tmp_path: Path, disk: Path, mounts: FakeMounts) -> None:
    spawn = FakeSpawn()

    def mounting_hook(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        mounts.table.append(f"{argv[1]}/boot/efi")  # what "mount /dev/sda1 /boot/efi" in the chroot does
        mounts._write()
        return spawn(argv, **options)

    result = run_job(job(SH, device=str(disk)), settings(tmp_path, mounts, mounting_hook)).result
    assert result.ok and result.unmounted
    assert "[provision-hookrun: the hook left 1 mounts in the target (/boot/efi): unmounted]" in result.output
    all_clean(mounts, tmp_path)  # umount --recursive of the root took it


def test_processes_still_in_the_target_are_killed_before_unmounting(
    tmp_path: Path, disk: Path, mounts: FakeMounts
) -> None:
    spawn, killed = FakeSpawn(), []

    def daemonizing_hook(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        (tmp_path / "proc" / "4242").mkdir()
        (tmp_path / "proc" / "4242" / "root").symlink_to(argv[1])  # a daemon left in the chroot
        return spawn(argv, **options)

    def kill(pid: int, sig: int) -> None:
        killed.append((pid, sig))
        (tmp_path / "proc" / "4242" / "root").unlink()

    s = settings(tmp_path, mounts, daemonizing_hook, kill=kill)
    result = run_job(job(SH, device=str(disk)), s).result
    assert killed == [(4242, signal.SIGKILL)] and result.ok and result.unmounted
    assert "[provision-hookrun: processes still using the target were killed (SIGKILL): 4242]" in result.output


def test_target_users_are_found_by_their_root_or_working_folder(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "hook-x" / "root"
    for pid, link, to in [("10", "root", root), ("11", "cwd", root / "tmp"), ("12", "root", Path("/")),
                          ("13", "cwd", tmp_path / "hook-x" / "rootless"), ("self", "root", root)]:  # fmt: skip
        (proc / pid).mkdir(parents=True)
        (proc / pid / link).symlink_to(to)
    killed: list[tuple[int, int]] = []
    assert kill_target_users(root, proc, kill=lambda pid, sig: killed.append((pid, sig)), wait=0) == [10, 11]
    assert killed == [(10, signal.SIGKILL), (11, signal.SIGKILL)]


def test_mount_points_decode_the_escapes(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text("36 35 98:0 / /mnt/a\\040b rw - ext4 /dev/x rw\n37 36 0:1 / /run rw shared:1 - tmpfs t rw\n")
    assert mount_points(info) == ["/mnt/a b", "/run"]


# ------------------------------------------------------------------------------------ finding the root
def vfat_root(disk: Path) -> None:
    offset, _ = root_range(disk)
    with disk.open("r+b") as f:
        f.seek(offset)
        f.write(bytes(4096))
        f.seek(offset + 82)
        f.write(b"FAT32   ")


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("vfat", "{disk}: the root file system (partition 3) is vfat, not ext4: hooks need ext2/3/4"),
        ("no gpt", "{disk}: no usable GPT: no GPT signature at LBA 1 (512-byte sectors)"),
        ("no root", "{disk}: no root partition: nothing to mount for the hook"),
        ("missing", "{disk}: cannot open: No such file or directory"),
    ],
)
def test_a_root_that_cannot_be_mounted_is_refused_before_any_mount(
    tmp_path: Path, mounts: FakeMounts, layout: str, expected: str
) -> None:
    disk = tmp_path / "disk.img"
    if layout == "vfat":
        vfat_root(make_grow_disk(disk, None))
    elif layout == "no gpt":
        disk.write_bytes(bytes(8 * MiB))
    elif layout == "no root":
        make_grow_disk(disk, None, [NewPartition(MiB, BIOS_BOOT, "bios"), NewPartition(8 * MiB, ESP, "esp"),
                                    NewPartition(0, LINUX_SWAP, "swap")])  # fmt: skip
    spawn = FakeSpawn()
    result = run_job(job(SH, device=str(disk)), settings(tmp_path, mounts, spawn)).result
    assert result.error == expected.format(disk=disk)
    assert (result.exit_code, result.unmounted, mounts.calls, spawn.calls) == (None, True, [], [])
    assert not (tmp_path / "run-provision").exists()  # not even a folder made


def test_without_a_device_the_target_record_names_the_disk(tmp_path: Path, disk: Path, mounts: FakeMounts) -> None:
    (tmp_path / "target").write_text(f"{disk}\n")
    result = run_job(job(SH), settings(tmp_path, mounts, FakeSpawn())).result
    assert result.ok and mounts.calls[0][-1] == str(disk)
    all_clean(mounts, tmp_path)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (None, "(no disk): no disk named by the job, and {record} cannot be read (No such file or directory): "
               "no verified write yet?"),
        ("disk.img\n", "(no disk): {record} does not hold one absolute path"),
    ],
)  # fmt: skip
def test_no_device_and_no_usable_record_is_an_error(
    tmp_path: Path, mounts: FakeMounts, record: str | None, expected: str
) -> None:
    if record is not None:
        (tmp_path / "target").write_text(record)
    result = run_job(job(SH), settings(tmp_path, mounts, FakeSpawn())).result
    assert result.error == expected.format(record=tmp_path / "target") and mounts.calls == []


def test_a_mount_point_that_is_a_symlink_is_never_mounted_over(tmp_path: Path, disk: Path) -> None:
    def hostile(root: Path) -> None:
        (root / "dev").rmdir()
        (root / "dev").symlink_to("/dev")  # mounting "over" it would mount on the live environment's /dev

    mounts = FakeMounts(tmp_path / "mountinfo", on_root=hostile)
    spawn = FakeSpawn()
    result = run_job(job(SH, device=str(disk)), settings(tmp_path, mounts, spawn)).result
    root = mounts.calls[1][-1]
    assert result.error == f"{disk}: /dev in the target is a symlink (to '/dev'): not mounted over"
    undone = [["umount", "--recursive", root], ["losetup", "-d", "/dev/loop9"]]
    assert mounts.calls == [*mount_calls(root, disk)[:2], *undone]
    assert spawn.calls == [] and result.unmounted
    all_clean(mounts, tmp_path)


def test_missing_mount_points_are_made_and_said(tmp_path: Path, disk: Path) -> None:
    mounts = FakeMounts(tmp_path / "mountinfo", tree=False)
    result = run_job(job(SH, device=str(disk)), settings(tmp_path, mounts, FakeSpawn())).result
    assert result.ok
    assert result.output == "ran\n" + "".join(
        f"[provision-hookrun: /{name} was missing in the target: created (0755) to mount on]\n"
        for name in ("dev", "proc", "sys", "run")
    )


# ------------------------------------------------------------------------------------ signals to the runner
def test_a_signal_before_the_hook_starts_runs_nothing(tmp_path: Path, disk: Path, mounts: FakeMounts) -> None:
    spawn = FakeSpawn()
    s = settings(tmp_path, mounts, spawn, stopped=lambda: signal.SIGTERM)
    result = run_job(job(SH, device=str(disk)), s).result
    assert result.error == f"{disk}: the runner got signal 15 before the hook started: not run"
    assert spawn.calls == [] and result.unmounted
    all_clean(mounts, tmp_path)


def test_a_signal_while_the_hook_runs_kills_it_and_cleans_up(tmp_path: Path, disk: Path, mounts: FakeMounts) -> None:
    asked: list[int] = []

    def stopped() -> int | None:
        asked.append(1)
        return signal.SIGHUP if len(asked) > 4 else None

    s = settings(tmp_path, mounts, FakeSpawn(("sh", "-c", "echo started; sleep 30")), stopped=stopped)
    result = run_job(job(SH, device=str(disk)), s).result
    assert (result.exit_code, result.timed_out, result.unmounted) == (None, False, True)
    assert result.error == "the hook runner was stopped by signal 1: the hook was killed"
    assert result.output == "started\n[provision-hookrun: the runner got SIGHUP: SIGTERM to the hook's process group]\n"
    all_clean(mounts, tmp_path)


# --------------------------------------------------------------------------------- the job and the answer
GOOD = {"name": "hostname", "where": "target", "script": SH + "hostname\n", "timeout": 60,
        "env": {"PROVISION_PARAM_NAME": "poste-01"}}  # fmt: skip


def test_a_valid_job_is_read() -> None:
    assert read_job(json.dumps(GOOD).encode()) == HookJob(
        "hostname", "target", SH + "hostname\n", 60, {"PROVISION_PARAM_NAME": "poste-01"}
    )
    odd = {**GOOD, "env": {"PROVISION_PARAM_X": "caf\udce9 \n `x` $(y) 中"}, "device": "/dev/sda"}
    assert read_job(json.dumps(odd).encode()).env == odd["env"]  # a non-UTF-8 byte as U+DCE9: carried


def run_main(data: bytes, args: list[str] | None = None) -> tuple[int, dict[str, Any]]:
    out = io.BytesIO()
    code = main(args or [], io.BytesIO(data), out)
    answer = json.loads(out.getvalue())
    HookResult.from_dict(answer)  # what the server reads
    return code, answer


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"not json", "", "the job is not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff{}", "", "the job is not UTF-8: invalid start byte at byte 0"),
        (b"[1]", "", "the job does not follow the contract: (job): Input should be an object"),
        (b'{"name": "x", "where": "server", "script": "#!/bin/sh", "timeout": NaN}', "", "the job is not JSON: "
         "NaN is not JSON"),
        (b'{"name": "x", "where": "server", "script": "#!/bin/sh", "timeout": 0}', "x", "the job does not follow "
         "the contract: where: Input should be 'target' or 'live'; timeout: Input should be greater than or equal "
         "to 1"),
        (json.dumps({**GOOD, "extra": 1}).encode(), "hostname", "extra: Extra inputs are not permitted"),
        (json.dumps({**GOOD, "name": "../../etc"}).encode(), "", "name: String should match pattern"),
        (json.dumps({**GOOD, "env": {"path": "x"}}).encode(), "hostname", "env: Value error, not environment "
         "variable names: 'path'"),
        (json.dumps({**GOOD, "env": {"A": "x\0y"}}).encode(), "hostname", "a value holds a NUL byte"),
        (json.dumps({**GOOD, "env": {"A": "\ud800"}}).encode(), "hostname", "the job cannot run: env.A: character 0 "
         "(U+D800) cannot be encoded"),
        (json.dumps({**GOOD, "script": "echo no interpreter"}).encode(), "hostname", "the job cannot run: script: "
         "does not start with #! (its interpreter)"),
        (json.dumps({**GOOD, "device": "sda"}).encode(), "hostname", "device: not an absolute path"),
        (b"[" * 100_000 + b"]" * 100_000, "", "the job is not JSON"),
        (b" " * (MAX_JOB + 1), "", f"the job is over {MAX_JOB} bytes"),
    ],
)  # fmt: skip
def test_a_bad_job_is_refused_with_exit_2_and_a_result_never_a_traceback(
    data: bytes, name: str, expected: str, capfd: pytest.CaptureFixture[str]
) -> None:
    code, answer = run_main(data)
    assert code == EXIT_BAD_JOB and answer["name"] == name and expected in answer["error"]
    assert (answer["exit_code"], answer["timed_out"], answer["unmounted"]) == (None, False, True)
    assert "Traceback" not in capfd.readouterr().err


def test_arguments_are_refused() -> None:
    code, answer = run_main(json.dumps(GOOD).encode(), ["--device", "/dev/sda"])
    assert code == EXIT_BAD_JOB and answer["error"] == "takes no arguments (the job comes on stdin), got 2"


def test_a_job_that_cannot_run_still_gets_its_result_and_exit_0(capfd: pytest.CaptureFixture[str]) -> None:
    code, answer = run_main(json.dumps({**GOOD, "device": "/nonexistent/disk"}).encode())
    assert code == EXIT_RESULT and answer["name"] == "hostname"
    assert answer["error"] == "/nonexistent/disk: cannot open: No such file or directory" and answer["unmounted"]
    assert "Traceback" not in capfd.readouterr().err


def test_no_result_written_is_exit_1() -> None:
    class Gone(io.BytesIO):
        def write(self, data: Any) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    assert main([], io.BytesIO(b"junk"), Gone()) == EXIT_NO_RESULT


def test_the_answer_always_fits_what_the_server_reads() -> None:
    output = Output()
    output.feed(b"\x01" * 300_000)  # each control byte is 6 bytes of JSON: \u0001
    ran = Ran(HookResult("noisy", 0, False, 1.0, "", output.total), output, ("a note",))
    data = ran.answer()
    answer = HookResult.from_dict(json.loads(data))
    assert len(data) <= MAX_ANSWER and answer.output_bytes == 300_000
    assert "bytes of output cut here" in answer.output and answer.output.endswith("[provision-hookrun: a note]\n")
    plain = Output()
    plain.feed(b"x" * 300_000)
    data = Ran(HookResult("plain", 0, False, 1.0, "", plain.total), plain).answer()
    assert len(data) <= MAX_ANSWER and len(json.loads(data)["output"]) > 60_000  # plain text is not cut further


def test_bad_job_is_a_fatal_error_with_its_problems() -> None:
    with pytest.raises(BadJob) as caught:
        read_job(json.dumps({**GOOD, "script": "x", "device": "rel"}).encode())
    assert caught.value.problems == ["script: does not start with #! (its interpreter)", "device: not an absolute path"]
