"""The Debian image's root tree: ``mmdebstrap`` into a folder, then the settings of the definition.

mmdebstrap (rather than debootstrap: one apt solver run for all packages, so a bad name fails in seconds
and the package set is exactly apt's) installs the variant, the package sets and the kernel. Then, without
shell strings: locale (``locale-gen`` in a chroot), keyboard and time zone (files, plus debconf), hostname,
fstab by UUID, users, the first-boot unit and the boot callback (``callback.py``), units to enable or
disable (``systemctl --root``), overlays, and an empty machine identity. Installed versions are read back
with ``dpkg-query --admindir``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from provision.builder import callback, reproducible
from provision.builder.definition import DebianDefinition
from provision.builder.disk import DiskLayout
from provision.builder.errors import ImageBuildError, PackageNotFound, StepFailed
from provision.builder.firstboot import UNIT_NAME, install_firstboot, reset_identity
from provision.builder.resolve import ArchiveEntry, missing_packages
from provision.builder.runner import Runner
from provision.builder.tiny import StagedRoot

log = logging.getLogger(__name__)

# Installed whatever the definition says: what the builder itself relies on.
REQUIRED_PACKAGES = (
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "locales",
    "keyboard-configuration",
    "console-setup",
)
# What mmdebstrap copies from the build machine, replaced: the PC's network configuration writes its own.
RESOLV_CONF = "# written by provision's image builder; the network configuration of the PC replaces it\n"
_MMDEBSTRAP_STAGES = re.compile(
    r"^I: (downloading packages|extracting archives|installing essential packages|"
    r"installing remaining packages|cleaning up|success)"
)


def installed_packages(runner: Runner, root: Path, step: str) -> dict[str, str]:
    """Package -> version of every package installed in the tree ``root`` (dpkg-query on its database),
    sorted by name; ``step`` names the runner step in the build log."""
    done = runner.run(
        step,
        [
            "dpkg-query",
            f"--admindir={root / 'var/lib/dpkg'}",
            "--show",
            "--showformat=${binary:Package}\t${Version}\t${db:Status-Abbrev}\n",
        ],
    )
    installed: dict[str, str] = {}
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].startswith("ii"):
            installed[parts[0].split(":")[0]] = parts[1]
    return dict(sorted(installed.items()))


def packages_to_install(spec: DebianDefinition) -> list[str]:
    return list(dict.fromkeys([*REQUIRED_PACKAGES, *spec.all_packages()]))


def mmdebstrap_argv(spec: DebianDefinition, suite: str, archive: list[ArchiveEntry], target: Path) -> list[str]:
    """The mmdebstrap command line (root mode, a folder; the archive lines as mirrors)."""
    recommends = "true" if spec.install_recommends else "false"
    argv = ["mmdebstrap", "--mode=root", "--format=directory", f"--variant={spec.variant}", "--architectures=amd64"]
    argv += [f"--components={','.join(spec.components)}", f'--aptopt=APT::Install-Recommends "{recommends}"']
    argv += [f"--include={','.join(packages_to_install(spec))}", suite, str(target)]
    argv += [entry.line() for entry in archive]
    return argv


def bootstrap(
    runner: Runner,
    spec: DebianDefinition,
    suite: str,
    archive: list[ArchiveEntry],
    target: Path,
    on_stage: Callable[[str], None] | None = None,
    epoch: int | None = None,
) -> None:
    """Run mmdebstrap into ``target``; PackageNotFound when apt cannot find a package. With ``epoch``,
    mmdebstrap and every maintainer script run with ``SOURCE_DATE_EPOCH`` (the initramfs, /etc/shadow's dates
    ... come out the same in every build of the same inputs)."""
    if target.exists():
        shutil.rmtree(target)

    def line(text: str) -> None:
        match = _MMDEBSTRAP_STAGES.match(text)
        if match and on_stage is not None:
            on_stage(match.group(1))

    try:
        runner.run(
            "bootstrap", mmdebstrap_argv(spec, suite, archive, target), env=epoch_env(epoch), stream=True, on_line=line
        )
    except StepFailed as exc:
        missing = missing_packages(exc.stderr_tail)
        if missing:
            raise PackageNotFound(
                missing[0],
                image=spec.name,
                step="bootstrap",
                suite=suite,
                detail="mmdebstrap: " + exc.stderr_tail.splitlines()[-1],
            ) from exc
        raise


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _locale_line(locale: str) -> str:
    return f"{locale} {'UTF-8' if locale.endswith('.UTF-8') else 'ISO-8859-1'}"


def epoch_env(epoch: int | None) -> dict[str, str]:
    """The environment a reproducible build step runs with."""
    return {} if epoch is None else {"SOURCE_DATE_EPOCH": str(epoch)}


def configure(runner: Runner, spec: DebianDefinition, root: Path, layout: DiskLayout, epoch: int | None = None) -> None:
    """Apply the definition's settings to the bootstrapped tree ``root`` (commands run with ``epoch`` as
    SOURCE_DATE_EPOCH: useradd dates /etc/shadow with it)."""
    env = epoch_env(epoch)
    locales = list(dict.fromkeys([spec.locale, *spec.extra_locales]))
    _write(root, "etc/locale.gen", "".join(_locale_line(loc) + "\n" for loc in locales))
    _write(root, "etc/default/locale", f"LANG={spec.locale}\n")
    runner.run("customize", ["chroot", str(root), "locale-gen"], env=env)
    kb = spec.keyboard
    _write(
        root,
        "etc/default/keyboard",
        f'XKBMODEL="{kb.model}"\nXKBLAYOUT="{kb.layout}"\nXKBVARIANT="{kb.variant}"\n'
        f'XKBOPTIONS="{kb.options}"\nBACKSPACE="guess"\n',
    )
    selections = (
        f"keyboard-configuration keyboard-configuration/layoutcode string {kb.layout}\n"
        f"keyboard-configuration keyboard-configuration/variantcode string {kb.variant}\n"
        f"keyboard-configuration keyboard-configuration/modelcode string {kb.model}\n"
        f"locales locales/default_environment_locale select {spec.locale}\n"
    )
    runner.run("customize", ["chroot", str(root), "debconf-set-selections"], input=selections, env=env)
    zone = root / "usr" / "share" / "zoneinfo" / spec.timezone
    if not zone.is_file():
        raise ImageBuildError(
            f"image {spec.name}: time zone {spec.timezone} is not in tzdata",
            image=spec.name,
            step="customize",
            timezone=spec.timezone,
        )
    localtime = root / "etc" / "localtime"
    localtime.unlink(missing_ok=True)
    localtime.symlink_to(f"/usr/share/zoneinfo/{spec.timezone}")
    _write(root, "etc/timezone", f"{spec.timezone}\n")
    _write(root, "etc/hostname", f"{spec.hostname}\n")
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{spec.hostname}\n\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    _write(root, "etc/hosts", hosts + "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
    _write(
        root,
        "etc/fstab",
        f"# written by provision's image builder (image {spec.name})\n"
        f"UUID={layout.root_uuid}\t/\text4\terrors=remount-ro\t0\t1\n"
        f"UUID={layout.esp_fs_uuid}\t/boot/efi\tvfat\tumask=0077,nofail\t0\t1\n",
    )
    (root / "boot" / "efi").mkdir(parents=True, exist_ok=True)
    if not (root / "etc" / "resolv.conf").is_symlink():  # a symlink (systemd-resolved's) is the package's own
        _write(root, "etc/resolv.conf", RESOLV_CONF)  # mmdebstrap copied the build machine's
    _add_users(runner, spec, root, env)
    install_firstboot(root)
    callback.install_callback(root)
    units = [UNIT_NAME, callback.UNIT_NAME, *spec.enable_units]
    runner.run("customize", ["systemctl", f"--root={root}", "enable", *units], env=env)
    if spec.disable_units:
        runner.run("customize", ["systemctl", f"--root={root}", "disable", *spec.disable_units], env=env)


def _add_users(runner: Runner, spec: DebianDefinition, root: Path, env: dict[str, str]) -> None:
    groups_file = root / "etc" / "group"
    known = {line.split(":", 1)[0] for line in groups_file.read_text(encoding="utf-8").splitlines() if line}
    for user in spec.users:
        groups = [g for g in user.groups if g in known]
        for missing in sorted(set(user.groups) - known):
            log.warning("image %s: user %s: group %s does not exist, skipped", spec.name, user.name, missing)
        argv = ["chroot", str(root), "useradd", "--create-home", "--shell", user.shell, "--comment", user.full_name]
        if groups:
            argv += ["--groups", ",".join(groups)]
        runner.run("customize", [*argv, user.name], env=env)


def finalize(runner: Runner, spec: DebianDefinition, root: Path, label: str) -> tuple[StagedRoot, dict[str, str]]:
    """Empty identity, apt caches and build-time state gone, installed versions read back; the kernel GRUB
    boots; the tree's SOURCE_DATE_EPOCH: the newest package's changelog date."""
    reset_identity(root)
    removed = reproducible.remove_build_state(root)
    if removed:
        runner.log.write(f"  build-time state removed: {' '.join(removed)}")
    for rel in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"):
        (root / rel).unlink(missing_ok=True)
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    installed = installed_packages(runner, root, "finish-tree")
    _write(root, "etc/provision/image.json", json.dumps({"image": spec.name, "label": label}, indent=2) + "\n")
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError(
            f"image {spec.name}: no /boot/vmlinuz-* after bootstrap", image=spec.name, step="finish-tree"
        )
    release = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{release}"
    if not initrd.is_file():
        raise ImageBuildError(
            f"image {spec.name}: no {initrd.name} (initramfs-tools failed?)", image=spec.name, step="finish-tree"
        )
    epoch = reproducible.newest_changelog(root)
    kernel = f"/boot/vmlinuz-{release}"
    return StagedRoot(root, kernel, f"/boot/initrd.img-{release}", epoch), installed
