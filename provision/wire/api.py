"""The agent API, version 1, as typed messages: what the live environment's agent sends and what the server
answers. The server validates bodies with these classes, the agent builds them; mypy checks both sides.

    hello:     Hello -> HelloAnswer (ImageAnswer | EraseAnswer | CaptureAnswer | WaitAnswer | RepairAnswer
               | LocalAnswer)
    erasure:   ErasureReport (provision.wire.erasure; when the plan says ``erase``) -> RunAnswer
    progress:  Progress -> ProgressAnswer
    multicast: MulticastCall (join, keepalive, leave; provision.wire.carousel) -> MulticastAnswer
    capture:   CaptureOffer, chunk uploads, CaptureDone (provision.wire.capture; when the answer says ``capture``)
    report:    Report (with a VerificationReport when the write got that far) -> RunAnswer
    firstboot: FirstBoot (an installed system's boot) -> {"ok": true}

The answers to hello, progress and report may carry a ``Screen``: what the machine's dashboard tile shows
(its number, its stage, its reason in plain words), for the PC's own console (``provision.agent.screen``).

docs/api.md describes each call; ``provision.wire.paths`` has the URLs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from provision.macaddr import normalize_mac
from provision.wire.capture import CapturePlan
from provision.wire.carousel import MulticastPlan, TransferReport
from provision.wire.delta import HeldVersion
from provision.wire.erasure import ErasePlan
from provision.wire.schema import Message, rule

PROBE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a probe file name the server keeps
MAX_PROBE_FILES = 64
MAX_BODY = 4 << 20  # bytes of one API call
MAX_WIPE_RANGES = 100_000
RETRY_AFTER = 30  # seconds a waiting agent waits before it asks again
DIGEST = r"[0-9a-f]{64}"
HOST_KEY = r"(ssh-ed25519|ecdsa-sha2-nistp256|ssh-rsa) [A-Za-z0-9+/]{20,1000}={0,2}( [\x20-\x7e]{0,200})?"
HEX_SECRET = r"[0-9a-f]{32,128}"  # nosec B105  # noqa: S105 - the pattern a secret matches, not a secret
MAX_FIRSTBOOT_PACKAGES = 20000  # an installed system's packages reported at first boot
FIRSTBOOT_SECRET_PATH = "/var/lib/provision/firstboot-secret"  # nosec B105  # noqa: S105 - a path (0600)

Firmware = Literal["uefi", "bios", "unknown"]
Stage = Literal["writing", "verifying", "capturing"]
SCREEN_STAGE = r"[a-z]{1,32}"  # a dashboard stage: booting, inventory, waiting, writing ... done, failed, repair


def _probe_files(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_PROBE_FILES:
        raise ValueError(f"at most {MAX_PROBE_FILES} probe files")
    bad = [name for name in value if not PROBE_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"bad probe file names: {', '.join(repr(n[:80]) for n in bad[:5])}")
    return value


@dataclass(frozen=True)
class BootInfo(Message):
    """How the live environment booted."""

    firmware: Firmware = "unknown"
    secure_boot: bool | None = None
    kernel: str | None = field(default=None, metadata=rule(max_length=200))


@dataclass(frozen=True)
class Hello(Message):
    """The live environment's first call. ``probe``: the raw files it collected (dmidecode.txt, lspci.txt,
    lsblk.json ...), kept by the server and read by provision.facts; ``facts``: already parsed facts (tests,
    other agents)."""

    omit_none = True

    mac: str = field(metadata=rule(check=normalize_mac))
    token: str = field(metadata=rule(min_length=8, max_length=128))
    boot: BootInfo = field(default_factory=BootInfo)
    facts: dict[str, Any] | None = None
    probe: dict[str, str] | None = field(default=None, metadata=rule(clean_text=True, check=_probe_files))
    warnings: list[str] = field(
        default_factory=list, metadata=rule(max_length=100, item_max_length=500, clean_text=True)
    )
    # the live environment's SSH host key (``ssh-ed25519 AAAA...``): the server pins it for this boot and refuses
    # any other when it runs the hooks
    host_key: str | None = field(default=None, metadata=rule(pattern=HOST_KEY))
    # the agent reads the answers' ``screen`` (an older agent refuses an answer with a field it does not know:
    # the server puts a screen in a hello answer only when the hello says so)
    screen: bool | None = None
    # the agent reads a plan's ``held`` (provision.wire.delta); without it the server leaves ``held`` out of the
    # plan (an older live environment refuses the key) and still records the prediction
    delta: bool | None = None
    # the agent can capture its disk (provision.wire.capture): without it a capture waits (an older live
    # environment refuses the ``capture`` answer)
    capture: bool | None = None


@dataclass(frozen=True)
class Screen(Message):
    """What the machine's dashboard tile shows, for the PC's own console: its number (``tile``) in the
    current session (None: outside it), its ``stage`` (the dashboard's stage, ``booting`` ... ``repair``) and
    that stage in words, and for a failed, repaired or waiting machine the first reason as one plain sentence
    with what to do. The words are in the server's default dashboard language (French)."""

    omit_none = True

    tile: int | None = field(default=None, metadata=rule(ge=0))
    stage: str | None = field(default=None, metadata=rule(pattern=SCREEN_STAGE))
    word: str | None = field(default=None, metadata=rule(max_length=64, clean_text=True))
    reason: str | None = field(default=None, metadata=rule(max_length=1000, clean_text=True))
    action: str | None = field(default=None, metadata=rule(max_length=500, clean_text=True))


class Answer(Message):
    """An answer that may carry a ``Screen``: without one, the key is left out (what an older agent reads)."""

    def to_dict(self) -> dict[str, Any]:
        found = super().to_dict()
        if found.get("screen", False) is None:
            del found["screen"]
        return found


@dataclass(frozen=True)
class Plan(Message):
    """What to write and how: the image version (``digest`` names it), where its index is, the recipe's
    rendered values."""

    image: str
    version: str  # the version's label
    digest: str = field(metadata=rule(pattern=DIGEST))
    index_url: str = ""
    wipe: str = "zero"
    target_disk: dict[str, Any] = field(default_factory=dict)
    grow_root: bool = False
    hostname: str | None = None
    hooks: list[dict[str, Any]] = field(default_factory=list)
    # what the installed system proves at its first boot (POST firstboot ``secret``); the agent writes it to
    # FIRSTBOOT_SECRET_PATH in the root file system after the verified write
    firstboot_secret: str | None = field(default=None, metadata=rule(pattern=HEX_SECRET))
    # the recipe's ``erase:``: every disk of the machine erased and verified (and reported) before the write
    erase: ErasePlan | None = None
    # the version's carousel when the run's chunks come by multicast (provision.wire.carousel); else by HTTP only
    multicast: MulticastPlan | None = None
    # the version the machine's disk holds, per the server's record, and what this version should need beyond it
    # (provision.wire.delta); the agent still checks every chunk on the disk
    held: HeldVersion | None = None

    def to_dict(self) -> dict[str, Any]:
        """Without ``multicast`` and ``held`` when they are None: an agent older than them refuses a key it does
        not know, so a plan by HTTP for a blank disk stays one it reads."""
        found = super().to_dict()
        for key in ("multicast", "held"):
            if found.get(key, False) is None:
                del found[key]
        return found


@dataclass(frozen=True)
class ImageAnswer(Answer):
    """A new run: write ``plan``."""

    run: str
    plan: Plan
    recipe: str | None = None
    action: Literal["image"] = "image"
    screen: Screen | None = None  # only when the hello asked for it (Hello.screen)


@dataclass(frozen=True)
class EraseAnswer(Answer):
    """A new erase-only run (a PC that leaves as parts): erase every disk per ``erase``, report it; nothing
    is written after."""

    run: str
    erase: ErasePlan
    recipe: str | None = None
    action: Literal["erase"] = "erase"
    screen: Screen | None = None  # only when the hello asked for it (Hello.screen)


@dataclass(frozen=True)
class CaptureAnswer(Answer):
    """A new capture run: read the disk per ``capture`` and store it as a new version (provision.wire.capture)."""

    run: str
    capture: CapturePlan
    recipe: str | None = None
    action: Literal["capture"] = "capture"
    screen: Screen | None = None  # only when the hello asked for it (Hello.screen)


@dataclass(frozen=True)
class WaitAnswer(Answer):
    """Stay in the live environment and ask again after ``retry_after`` seconds."""

    reason: str
    retry_after: int = RETRY_AFTER
    action: Literal["wait"] = "wait"
    screen: Screen | None = None  # only when the hello asked for it (Hello.screen)


@dataclass(frozen=True)
class RepairAnswer(Answer):
    """Set aside for a technician: the recipe's health gate said why."""

    reasons: list[str]
    recipe: str | None = None
    action: Literal["repair"] = "repair"
    screen: Screen | None = None  # only when the hello asked for it (Hello.screen)


@dataclass(frozen=True)
class LocalAnswer(Answer):
    """The recipe says: boot the local disk."""

    reason: str
    retry_after: int = RETRY_AFTER
    action: Literal["local"] = "local"
    screen: Screen | None = None  # only when the hello asked for it (Hello.screen)


HelloAnswer = ImageAnswer | EraseAnswer | CaptureAnswer | WaitAnswer | RepairAnswer | LocalAnswer
ANSWERS: dict[str, type[HelloAnswer]] = {
    "image": ImageAnswer,
    "erase": EraseAnswer,
    "capture": CaptureAnswer,
    "wait": WaitAnswer,
    "repair": RepairAnswer,
    "local": LocalAnswer,
}


@dataclass(frozen=True)
class Progress(Message):
    token: str = field(metadata=rule(min_length=8, max_length=128))
    stage: Stage
    bytes_done: int = field(metadata=rule(ge=0))
    bytes_total: int = field(metadata=rule(ge=0))
    rate: float = field(metadata=rule(ge=0))


@dataclass(frozen=True)
class ProgressAnswer(Answer):
    run: str
    state: str
    ok: bool = True
    screen: Screen | None = None


@dataclass(frozen=True)
class VerificationReport(Message):
    """What the agent verified after the write and fsync: ``chunks``/``verified`` count the image's data
    chunks (holes are not chunks on disk), ``holes``/``holes_verified`` the holes read back as zeros under
    the ``zero`` wipe policy."""

    omit_none = True

    digest: str = field(metadata=rule(pattern=DIGEST))
    chunks: int = field(metadata=rule(ge=0))
    verified: int = field(metadata=rule(ge=0))
    read_back_ok: bool
    bytes_written: int = field(metadata=rule(ge=0))
    seconds: float = field(metadata=rule(ge=0))
    mean_rate: float = field(metadata=rule(ge=0))
    holes: int = field(default=0, metadata=rule(ge=0))
    holes_verified: int = field(default=0, metadata=rule(ge=0))
    wipe_method: str | None = field(default=None, metadata=rule(max_length=64))
    wipe_ranges: list[tuple[int, int]] = field(default_factory=list, metadata=rule(max_length=MAX_WIPE_RANGES))


@dataclass(frozen=True)
class Report(Message):
    """The end of a run: ``ok`` with the verification ``report``, or not ok with the ``reason`` (and the
    report when the write got as far as a verification). ``error``: the failure's type and facts; ``grow``:
    what growing the root file system did; ``writer``: the writer's figures (chunks fetched and skipped,
    incidents, I/O mode); all three are kept as events."""

    omit_none = True

    token: str = field(metadata=rule(min_length=8, max_length=128))
    ok: bool
    reason: str | None = field(default=None, metadata=rule(max_length=2000, clean_text=True))
    report: VerificationReport | None = None
    error: dict[str, Any] | None = None
    grow: dict[str, Any] | None = None
    writer: dict[str, Any] | None = None
    transfer: TransferReport | None = None  # how the chunks came: multicast, HTTP, repairs (provision.wire.carousel)

    def __post_init__(self) -> None:
        if self.ok and self.report is None:
            raise ValueError("a successful report needs the verification (report)")
        if not self.ok and not self.reason:
            raise ValueError("a failure needs a reason")


@dataclass(frozen=True)
class RunAnswer(Answer):
    """The run's state after a report (``reason`` when it failed)."""

    run: str
    state: str
    reason: str | None = None
    screen: Screen | None = None


@dataclass(frozen=True)
class FirstBoot(Message):
    """An imaged machine's installed system reporting its first (or a later) boot from its own disk, with the
    run's first-boot ``secret`` (read from FIRSTBOOT_SECRET_PATH) as its credential."""

    event: Literal["firstboot", "boot"]
    mac: str = field(metadata=rule(check=normalize_mac))
    image: str = field(metadata=rule(max_length=64))
    label: str = field(metadata=rule(max_length=128))
    firmware: Firmware = "unknown"
    secure_boot: bool | None = None
    machine_id: str | None = field(default=None, metadata=rule(max_length=64))
    secret: str | None = field(default=None, metadata=rule(pattern=HEX_SECRET))
    # what the post-install hooks left (issue 13): the system's host name, and its installed packages as
    # ``NAME=VERSION`` (Debian images; the busybox test image has none)
    hostname: str | None = field(default=None, metadata=rule(max_length=253, clean_text=True))
    packages: list[str] = field(
        default_factory=list, metadata=rule(max_length=MAX_FIRSTBOOT_PACKAGES, item_max_length=300, clean_text=True)
    )
