"""The recipe schema (pydantic): what a file under recipes/ may say.

Unknown keys are errors (a typo must never silently drop a setting). Templates and match conditions are
checked by the loader, which knows the fact vocabulary; this module only states shapes and ranges.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from provision.states import Destination
from provision.wire.hooks import MAX_TIMEOUT

_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Name = Annotated[StrictStr, StringConstraints(pattern=_NAME)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Action(enum.StrEnum):
    IMAGE = "image"  # write the recipe's image
    REPAIR = "repair"  # do not image: set aside for a technician (reasons recorded)
    LOCAL = "local"  # boot the local disk, leave the machine as it is
    WAIT = "wait"  # keep the machine in the live environment until an operator decides
    ERASE = "erase"  # erase every drive (the recipe's ``erase:``), write nothing: a PC that leaves as parts


class Wipe(enum.StrEnum):
    ZERO = "zero"  # every sector not covered by image data is zeroed (BLKZEROOUT or zeros)
    DISCARD = "discard"  # holes are discarded (TRIM); fast on SSDs, contents undefined on HDDs
    NONE = "none"  # holes are left as they are


class DiskSelect(enum.StrEnum):
    AUTO = "auto"  # the only internal disk that fits; stop with a reason if several do
    LARGEST = "largest"
    SMALLEST = "smallest"


class TargetDisk(Strict):
    select: DiskSelect = DiskSelect.AUTO
    transport: list[StrictStr] | None = None  # allowed transports (sata, nvme, virtio ...)
    model: StrictStr | None = None  # glob on the disk model
    name: StrictStr | None = None  # kernel name, e.g. sda (only for odd machines)
    min_gb: StrictInt | None = Field(default=None, ge=1)


class Health(Strict):
    """When the chosen recipe's health gate fails the machine goes to repair instead of imaging.

    Unknown values (no SMART data, no disk list) do not fail the gate: the writer's own checks still apply.
    """

    smart_failed: StrictBool = True  # a failed SMART self-assessment sends the machine to repair
    max_reallocated: StrictInt | None = Field(default=None, ge=0)
    max_pending: StrictInt | None = Field(default=None, ge=0)
    max_media_errors: StrictInt | None = Field(default=None, ge=0)
    max_power_on_hours: StrictInt | None = Field(default=None, ge=0)
    min_ram_mb: StrictInt | None = Field(default=None, ge=0)
    min_disk_gb: StrictInt | None = Field(default=None, ge=0)


class Erase(Strict):
    """Donor data erasure of every drive of the machine, before its image (or alone: ``action: erase``).
    The meanings are the wire's (provision.wire.erasure.ErasePlan); ``lot`` is a template like ``hostname``,
    rendered with the machine's facts: the donor's delivery the machine is recorded in."""

    method: Literal["auto", "overwrite"] = "auto"  # auto: the strongest the drive can do (NIST Purge)
    hidden_areas: Literal["report", "remove"] = "report"  # HPA/DCO
    verify: Literal["sample", "full"] = "sample"
    sample_percent: StrictFloat | StrictInt = Field(default=5.0, ge=0.01, le=100)
    unfreeze: StrictBool = True  # a frozen ATA drive: suspend to RAM to unfreeze it (else overwrite)
    lot: StrictStr | None = Field(default=None, min_length=1, max_length=256)


class Hook(Strict):
    """One hook the plan runs (provision.hooks): its parameters (templates), and overrides of its header's
    timeout and on_failure (None: the header's)."""

    name: Name
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: StrictInt | None = Field(default=None, ge=1, le=MAX_TIMEOUT)
    on_failure: StrictStr | None = Field(default=None, pattern=r"^(fail|warn)$")


_INEXACT = re.compile(r"[*?\[\]{}<>=!]|\.\.")  # a glob, a range, a comparison or a template in a match value


def _exact(value: object) -> bool:
    """Whether a match value names machines one by one (a string or a list of strings, none inexact)."""
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, str) and v.strip() and not _INEXACT.search(v) for v in values)


class Recipe(Strict):
    name: Name
    description: StrictStr = ""
    priority: StrictInt = Field(default=0, ge=-1000, le=1000)
    default: StrictBool = False
    action: Action = Action.IMAGE
    destination: Destination | None = None  # where the machines go (school, family ...): the city's report
    match: dict[str, Any] = Field(default_factory=dict)
    image: StrictStr | None = None  # NAME or NAME@VERSION
    target_disk: TargetDisk = Field(default_factory=TargetDisk)
    wipe: Wipe = Wipe.ZERO
    erase: Erase | None = None  # every drive erased and verified first (alone with ``action: erase``)
    grow_root: StrictBool = True
    hostname: StrictStr | None = None
    health: Health = Field(default_factory=Health)
    hooks: list[Hook] = Field(default_factory=list)
    bundles: list[Name] = Field(default_factory=list, max_length=64)  # recipes/bundles/NAME.yaml, after the hooks
    # how the image's chunks come (docs/multicast.md): None = the server's multicast.transfer
    transfer: Literal["auto", "multicast", "unicast"] | None = None
    # a machine the recipe matches is captured as this image at its network boot (docs/capture.md)
    capture: Name | None = None

    @field_validator("bundles")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"bundle {twice[0]!r} is listed twice")
        return names

    @field_validator("image")
    @classmethod
    def _image_ref(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9._-]*(@[A-Za-z0-9._-]+)?|\{\{.*\}\}", value):
            raise ValueError("image must be NAME or NAME@VERSION (lower-case letters, digits, . _ -)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.capture is not None:
            if self.action is not Action.IMAGE:
                raise ValueError(f"a capture recipe captures: it takes no 'action: {self.action.value}'")
            given = [k for k in ("image", "erase", "hostname", "hooks", "bundles") if getattr(self, k)]
            if given:
                raise ValueError(f"a capture recipe writes nothing: it takes no {', '.join(map(repr, given))}")
            if self.default:  # every PC matching nothing else would have its disk published as the image
                raise ValueError(
                    "a capture recipe publishes the disk of each machine it matches as its image: it cannot be the "
                    "default; name the golden PC with 'match:' (e.g. {mac: '52:54:00:12:34:56'})"
                )
            if self.match and not any(_exact(self.match.get(key)) for key in ("mac", "serial")):
                raise ValueError(
                    "a capture recipe publishes the disk of each machine it matches as its image: name the golden "
                    "PC exactly with 'mac:' or 'serial:' (one value or a list, no wildcard, range or template), "
                    "e.g. match: {mac: '52:54:00:12:34:56'}"
                )
        if self.action is Action.IMAGE and not self.image and self.capture is None:
            raise ValueError("an image recipe needs 'image: NAME[@VERSION]'")
        if self.action is Action.ERASE and self.erase is None:
            raise ValueError("an erase recipe needs 'erase:' (e.g. 'erase: {method: auto}')")
        if self.action is Action.ERASE and (self.image or self.hooks or self.bundles or self.hostname):
            raise ValueError("an erase recipe writes nothing: it takes no 'image', 'hostname', 'hooks' or 'bundles'")
        if self.default and self.match:
            raise ValueError("the default recipe applies when nothing else matches: it takes no 'match'")
        return self
