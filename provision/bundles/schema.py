"""The bundle file (``recipes/bundles/NAME.yaml``): Debian packages a recipe adds to its image, and how.

```yaml
name: science                      # the file's name, without .yaml
description: Sciences au lycée
packages:                          # Debian package names, each optionally with a version constraint
  - geogebra
  - kalzium (>= 4:22)              # NAME (OP VERSION), OP one of >= <= >> << =
  - step=4:22.12.3-1               # NAME=VERSION: exactly that version
debs: [local/outil_1.2_all.deb]    # .deb files beside the bundle (relative paths), optional
hook: science-setup                # a post-install hook to run after the install, optional
timeout: 900                       # seconds apt may take on the PC (update + install), 30..21000
on_failure: fail                   # fail | warn: what a failed install does to the run
```

Unknown keys are errors, types are strict (pydantic), every problem is ``FILE:LINE: key: message``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from provision.wire.hooks import MAX_TIMEOUT

NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
PACKAGE = r"[a-z0-9][a-z0-9+.-]+"  # Debian policy 5.6.1
VERSION = r"[0-9][A-Za-z0-9.+~:-]*"  # Debian policy 5.6.12: [epoch:]upstream[-revision]
OPERATORS = (">=", "<=", ">>", "<<", "=")
_SPEC = re.compile(
    rf"^(?P<name>{PACKAGE})\s*(?:=\s*(?P<pin>{VERSION})|\(\s*(?P<op>>=|<=|>>|<<|=)\s*(?P<version>{VERSION})\s*\))?$"
)
MAX_PACKAGES = 500
MAX_DEBS = 100
HOOK_MARGIN = 60  # seconds the bundle hook gets beyond apt's own time: the key, the checks, the report
DEFAULT_TIMEOUT = 900


@dataclass(frozen=True)
class PackageSpec:
    """One entry of ``packages``: a name, and a version constraint (``op`` is ``==`` for ``NAME=VERSION``)."""

    name: str
    op: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> PackageSpec:
        match = _SPEC.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"{text[:80]!r} is not NAME, NAME=VERSION or NAME (OP VERSION) with a Debian package name "
                "(lower-case letters, digits, '+', '-', '.') and OP one of >=, <=, >>, <<, ="
            )
        if match["pin"]:
            return cls(match["name"], "==", match["pin"])
        return cls(match["name"], match["op"], match["version"])

    @property
    def apt_argument(self) -> str:
        """What ``apt-get install`` is given: ``NAME=VERSION`` for an exact version, else ``NAME``."""
        return f"{self.name}={self.version}" if self.op in ("==", "=") and self.version else self.name

    def __str__(self) -> str:
        if self.op is None:
            return self.name
        return f"{self.name}={self.version}" if self.op == "==" else f"{self.name} ({self.op} {self.version})"


def _spec(text: str) -> str:
    PackageSpec.parse(text)
    return text.strip()


def _relative(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or "\\" in path:
        raise ValueError(f"{path[:80]!r}: give a path relative to the bundle's folder, without '..'")
    if not path.endswith(".deb"):
        raise ValueError(f"{path[:80]!r}: a local package is a .deb file")
    return path


Spec = Annotated[StrictStr, AfterValidator(_spec)]
DebPath = Annotated[StrictStr, AfterValidator(_relative)]


class Bundle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[StrictStr, StringConstraints(pattern=NAME)]
    description: Annotated[StrictStr, StringConstraints(max_length=500)] = ""
    packages: list[Spec] = Field(default_factory=list, max_length=MAX_PACKAGES)
    debs: list[DebPath] = Field(default_factory=list, max_length=MAX_DEBS)
    hook: Annotated[StrictStr, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] | None = None
    timeout: int = Field(default=DEFAULT_TIMEOUT, ge=30, le=MAX_TIMEOUT - HOOK_MARGIN, strict=True)
    on_failure: StrictStr = Field(default="fail", pattern=r"^(fail|warn)$")

    @field_validator("debs")
    @classmethod
    def _distinct(cls, debs: list[str]) -> list[str]:
        seen = set()
        for path in debs:
            if path in seen:
                raise ValueError(f"{path!r} is listed twice")
            seen.add(path)
        return debs

    @model_validator(mode="after")
    def _something(self) -> Bundle:
        if not self.packages and not self.debs:
            raise ValueError("a bundle names at least one package (packages) or local .deb (debs)")
        return self

    @property
    def specs(self) -> list[PackageSpec]:
        return [PackageSpec.parse(text) for text in self.packages]
