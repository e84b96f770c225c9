"""apt sources: the machine's own entries (deb822 and one-line) and the one-line entry for another suite."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.bootfiles.errors import BootFilesError

DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class AptSource:
    """One source entry (a deb822 stanza or a one-line ``deb`` entry)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None
    enabled: bool = True


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse a ``*.sources`` file (deb822). Comments and unknown fields are ignored."""
    sources: list[AptSource] = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key: str | None = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key is not None:
                fields[key] += "\n" + line.strip()
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            fields[key] = value.strip()
        if "uris" not in fields or "suites" not in fields:
            continue
        signed = fields.get("signed-by", "").strip()
        sources.append(
            AptSource(
                types=tuple(fields.get("types", "deb").split()),
                uris=tuple(fields["uris"].split()),
                suites=tuple(fields["suites"].split()),
                components=tuple(fields.get("components", "").split()),
                # An inline key block (several lines) is not a path: treat it as unknown.
                signed_by=signed if signed and "\n" not in signed else None,
                enabled=fields.get("enabled", "yes").lower() not in ("no", "false", "0"),
            )
        )
    return sources


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse a ``sources.list`` file: ``deb [opt=value ...] URI SUITE COMPONENT...``."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        match = re.match(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if match is None:
            continue
        kind, opts, uri, suite, comps = match.groups()
        for opt in (opts or "").split():
            name, _, value = opt.partition("=")
            options[name.lower()] = value
        sources.append(
            AptSource(
                types=(kind,),
                uris=(uri,),
                suites=(suite,),
                components=tuple(comps.split()),
                signed_by=options.get("signed-by") or None,
            )
        )
    return sources


def read_machine_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """All source entries configured on this machine, in apt's reading order."""
    sources: list[AptSource] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        sources += parse_one_line_sources(main_list.read_text(encoding="utf-8", errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
            if path.suffix == ".list":
                sources += parse_one_line_sources(text)
            elif path.suffix == ".sources":
                sources += parse_deb822_sources(text)
    return sources


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    """The machine's Debian codename (``VERSION_CODENAME``), e.g. ``bookworm``."""
    try:
        text = os_release.read_text(encoding="utf-8")
    except OSError as exc:
        raise BootFilesError(f"{os_release}: cannot read: {exc.strerror}", path=str(os_release)) from exc
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "VERSION_CODENAME" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    raise BootFilesError(f"{os_release}: no VERSION_CODENAME", path=str(os_release))


def archive_source(sources: Iterable[AptSource], codename: str) -> AptSource:
    """The enabled ``deb`` entry that serves the plain suite ``codename`` (not -security/-updates)."""
    for source in sources:
        if source.enabled and "deb" in source.types and codename in source.suites and source.uris:
            return source
    raise BootFilesError(
        f"no apt source for suite {codename!r} in /etc/apt (sources.list or sources.list.d/*.sources)",
        suite=codename,
    )


def one_line_entry(source: AptSource, suite: str, components: Sequence[str] = ("main",)) -> str:
    """A ``sources.list`` line for ``suite`` from the archive of ``source``."""
    keyring = source.signed_by if source.signed_by and source.signed_by.startswith("/") else DEFAULT_KEYRING
    return f"deb [signed-by={keyring}] {source.uris[0]} {suite} {' '.join(components)}\n"
