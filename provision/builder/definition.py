"""Image definitions (``images/*.yaml``): what a master image is made of, validated with located errors.

Two builders share one disk layout (GPT: BIOS boot + ESP + ext4 root, so one image boots BIOS and UEFI PCs)
and one boot chain (GRUB for BIOS; shim + Debian's signed GRUB + Debian's signed kernel for UEFI):

- ``builder: debian``: a Debian system from ``mmdebstrap`` (package sets, locale, keyboard, time zone,
  users, overlays, a first-boot unit). The educational images.
- ``builder: tiny``: a busybox root file system from the Debian package cache, built offline in seconds.
  Tests and demos boot it; its init prints a marker, calls back to a URL and powers off.

Unknown keys, wrong types and bad package names are reported as ``FILE:LINE: key: message`` (all problems
at once, in a ``ConfigError``), the way recipes are.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from provision import yamlsrc
from provision.errors import ConfigError, Problem

MiB = 1 << 20
GiB = 1 << 30
MAX_DEFINITION_BYTES = 1 << 20
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": MiB, "MIB": MiB, "G": GiB, "GIB": GiB, "T": 1 << 40}
_UNITS["TIB"] = 1 << 40
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1
CMDLINE_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.,:/=@+%-]+$")  # nothing that could end a GRUB line or quote
NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,62}$"
DEFAULT_TINY_MODULES = (
    # disks, then the root file system (crc32c is a soft dependency of ext4's checksums), then NICs
    "virtio_pci",
    "virtio_blk",
    "ahci",
    "sd_mod",
    "crct10dif_generic",
    "crc64_rocksoft_generic",
    "nvme",
    "crc32c_generic",
    "ext4",
    "virtio_net",
    "e1000",
    "e1000e",
)


def parse_size(value: object) -> object:
    """``"128MiB"``, ``"4G"``, ``1048576`` -> bytes (``"auto"`` -> 0). Other values are left to pydantic."""
    if value == "auto":
        return 0
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        unit = match.group(2).upper() if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(f"{value!r} is not a size (an integer with an optional unit: 512MiB, 4GiB)")
        return int(match.group(1)) * _UNITS[unit]
    return value


def _package(name: str) -> str:
    if not PACKAGE_RE.match(name):
        raise ValueError(
            f"{name!r} is not a Debian package name (lower-case letters, digits, '+', '-', '.'; 2 or more)"
        )
    return name


def _cmdline(text: str) -> str:
    for token in text.split():
        if not CMDLINE_TOKEN_RE.match(token):
            raise ValueError(f"kernel argument {token!r} has characters GRUB or the kernel would misread")
    return " ".join(text.split())


def _relative(path: str) -> str:
    if not path or path.startswith("/") or ".." in Path(path).parts:
        raise ValueError(f"{path!r}: give a path relative to the definition's folder, without '..'")
    return path


Size = Annotated[StrictInt, BeforeValidator(parse_size), Field(ge=0)]
PackageName = Annotated[StrictStr, AfterValidator(_package)]
Name = Annotated[StrictStr, Field(pattern=NAME_RE)]
Word = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.+@-]*$", max_length=64)]
RelPath = Annotated[StrictStr, AfterValidator(_relative)]
Cmdline = Annotated[StrictStr, AfterValidator(_cmdline)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DiskSpec(Strict):
    """The raw disk. The layout itself is fixed: BIOS boot (1 MiB), ESP (FAT32), ext4 root (the rest)."""

    size: Size = 0  # 0 or "auto": root content + free_space, rounded up to 64 MiB
    esp_size: Size = Field(default=64 * MiB, ge=40 * MiB, le=4 * GiB)
    free_space: Size = 1 * GiB  # headroom in the root file system when size is auto
    chunk_size: Size = Field(default=4 * MiB, ge=64 << 10, le=256 * MiB)


class BootSpec(Strict):
    cmdline: Cmdline = "quiet"  # kernel arguments after root=UUID=...
    timeout: StrictInt = Field(default=1, ge=0, le=60)  # GRUB menu seconds
    serial: StrictBool = True  # GRUB and the kernel also on ttyS0 (115200 8N1)
    title: StrictStr | None = Field(default=None, pattern=r"^[^\"'\\\n$]*$", max_length=80)


class Keyboard(Strict):
    layout: Word = "fr"
    variant: Word = ""
    model: Word = "pc105"
    options: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_:,-]*$")] = ""


class User(Strict):
    name: Annotated[StrictStr, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
    full_name: Annotated[StrictStr, Field(pattern=r"^[^:\n]*$", max_length=64)] = ""
    groups: list[Annotated[StrictStr, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]] = []
    shell: Annotated[StrictStr, Field(pattern=r"^/[A-Za-z0-9/_.-]+$")] = "/bin/bash"


class Common(Strict):
    name: Name
    description: StrictStr = ""
    disk: DiskSpec = DiskSpec()
    boot: BootSpec = BootSpec()
    overlays: list[RelPath] = []  # folders copied over the root file system, in order


class TinyDefinition(Common):
    """A busybox system from the package cache: the test and demo image."""

    builder: Literal["tiny"]
    extra_debs: list[PackageName] = []  # unpacked (dpkg -x) into the root file system as they are
    modules: list[Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]+$")]] = list(DEFAULT_TINY_MODULES)


class DebianDefinition(Common):
    """A Debian system from mmdebstrap."""

    builder: Literal["debian"]
    suite: Annotated[StrictStr, Field(pattern=r"^[a-z]+$")] | None = None  # default: the machine's codename
    variant: Literal["minbase", "important", "standard"] = "important"
    components: list[Annotated[StrictStr, Field(pattern=r"^[a-z-]+$")]] = ["main"]
    install_recommends: StrictBool = False
    packages: dict[Annotated[StrictStr, Field(pattern=r"^[a-z0-9_-]+$")], list[PackageName]] = {}
    locale: Annotated[StrictStr, Field(pattern=r"^[a-z]{2,3}_[A-Z]{2}(\.UTF-8)?(@[a-z]+)?$")] = "fr_FR.UTF-8"
    extra_locales: list[Annotated[StrictStr, Field(pattern=r"^[a-z]{2,3}_[A-Z]{2}(\.UTF-8)?(@[a-z]+)?$")]] = []
    keyboard: Keyboard = Keyboard()
    timezone: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")] = "Europe/Paris"
    hostname: Annotated[StrictStr, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")] = "debian"
    users: list[User] = []
    enable_units: list[Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9@._-]+$")]] = []
    disable_units: list[Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9@._-]+$")]] = []

    def all_packages(self) -> list[str]:
        """Every package of every set, in order, once."""
        return list(dict.fromkeys(p for names in self.packages.values() for p in names))


ImageDefinition = TinyDefinition | DebianDefinition
BUILDERS: dict[str, type[TinyDefinition] | type[DebianDefinition]] = {
    "tiny": TinyDefinition,
    "debian": DebianDefinition,
}


@dataclass(frozen=True)
class LoadedDefinition:
    """A valid definition and where it came from."""

    path: Path
    spec: ImageDefinition
    sha256: str  # of the file's bytes: an input of the build

    @property
    def name(self) -> str:
        return self.spec.name

    def overlay_dirs(self) -> list[Path]:
        return [self.path.parent / rel for rel in self.spec.overlays]


def parse_definition(text: str, path: Path, display: str | None = None) -> LoadedDefinition:
    """Validate the YAML ``text`` of the definition at ``path``; ConfigError lists every problem."""
    name = display or str(path)
    doc = yamlsrc.load(text, name)
    problems = list(doc.problems)
    data: Any = doc.data
    if not problems and not isinstance(data, dict):
        problems.append(Problem(name, doc.line_of(()) or 1, "", "an image definition is a YAML mapping"))
    if problems:
        raise ConfigError(problems)
    builder = data.get("builder")
    model = BUILDERS.get(builder) if isinstance(builder, str) else None
    if model is None:
        line = doc.line_of(("builder",)) or doc.line_of(())
        what = "required key is missing" if builder is None else f"unknown builder {builder!r}"
        raise ConfigError([Problem(name, line, "builder", f"{what} (one of: {', '.join(BUILDERS)})")])
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(yamlsrc.validation_problems(doc.file, doc, exc)) from None
    for i, rel in enumerate(spec.overlays):
        if not (path.parent / rel).is_dir():
            where = ("overlays", i)
            problems.append(Problem(name, doc.line_of(where), yamlsrc.dotted(where), f"{rel}: no such folder"))
    if isinstance(spec, DebianDefinition) and not spec.all_packages():
        problems.append(Problem(name, doc.line_of(("packages",)), "packages", "a debian image needs packages"))
    if problems:
        raise ConfigError(problems)
    return LoadedDefinition(path, spec, hashlib.sha256(text.encode()).hexdigest())


def load_definition(path: Path) -> LoadedDefinition:
    """Read and validate ``path``. ConfigError (FILE:LINE: key: message) on any problem."""
    try:
        size = path.stat().st_size
        if size > MAX_DEFINITION_BYTES:
            raise ConfigError([Problem(str(path), None, "", f"file is {size} bytes; at most {MAX_DEFINITION_BYTES}")])
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {exc.strerror or exc}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(str(path), None, "", f"not UTF-8 text: {exc.reason}")]) from exc
    return parse_definition(text, path)


def definition_files(images_dir: Path) -> list[Path]:
    """The definitions of a folder (``*.yaml``), sorted by name."""
    return sorted(p for p in images_dir.glob("*.yaml") if p.is_file())


def check_definitions(images_dir: Path) -> tuple[list[LoadedDefinition], list[Problem]]:
    """Every valid definition of ``images_dir`` and the problems of the others (and duplicate names)."""
    loaded: list[LoadedDefinition] = []
    problems: list[Problem] = []
    for path in definition_files(images_dir):
        try:
            loaded.append(load_definition(path))
        except ConfigError as exc:
            problems += exc.problems
    seen: dict[str, Path] = {}
    for item in loaded:
        if item.name in seen:
            problems.append(
                Problem(str(item.path), None, "name", f"{item.name!r} is also defined in {seen[item.name]}")
            )
        seen.setdefault(item.name, item.path)
    return loaded, problems
