"""Server configuration: a YAML file, then command-line flags on top, validated as one typed value.

Every setting has a default that runs the demo rack (198.18.0.1 on a lab bridge), so `provision serve` with
only `--interface` and `--address` works. Problems are reported like recipe problems: FILE:LINE: key: message.
"""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from provision import yamlsrc
from provision.errors import ConfigError, Problem
from provision.resources import data_dir
from provision.sshkeys import KEY_DIR, KEY_NAME


class DhcpMode(enum.StrEnum):
    PROXY = "proxy"  # answer PXE clients with boot information only; another server leases addresses
    FULL = "full"  # lease addresses from `range` on the imaging LAN, plus boot information
    OFF = "off"  # no DHCP at all: the site's server is configured with `provision dhcp-config`


class UnknownPolicy(enum.StrEnum):
    IMAGE = "image"  # an unknown machine boots the live environment and is imaged by its recipe
    REGISTER = "register"  # it boots the live environment, reports, and waits for an operator
    IGNORE = "ignore"  # it is not network-booted: no PXE answer (in full DHCP mode, a plain lease only)


class UefiLoader(enum.StrEnum):
    SHIM = "shim"  # shimx64.efi -> signed GRUB -> signed kernel: boots with Secure Boot on or off
    IPXE = "ipxe"  # snponly.efi: unsigned, only for sites that switch Secure Boot off


class TokenBinding(enum.StrEnum):
    AUTO = "auto"  # "neighbour" when serving an interface (a workshop), "off" without one (tests on loopback)
    NEIGHBOUR = "neighbour"  # who asks must be, in the kernel's neighbour table, the MAC asked for
    OFF = "off"  # for sites whose PCs reach the server through a router (a DHCP relay): no binding


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DhcpConfig(_Model):
    mode: DhcpMode = DhcpMode.PROXY
    range_start: IPv4Address | None = None
    range_end: IPv4Address | None = None
    netmask: IPv4Address = IPv4Address("255.255.255.0")
    router: IPv4Address | None = None
    dns: list[IPv4Address] = Field(default_factory=list)
    lease_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    # How long an unconfirmed offer holds its address (a PXE ROM REQUESTs within a few seconds), and how long
    # an address a client DECLINEd (found in use) is kept out of offers: never more than one lease.
    offer_seconds: int = Field(default=10, ge=1, le=300)
    decline_seconds: int = Field(default=600, ge=10, le=86400)

    @model_validator(mode="after")
    def _range(self) -> DhcpConfig:
        if self.mode is DhcpMode.FULL:
            if self.range_start is None or self.range_end is None:
                raise ValueError("full DHCP needs range_start and range_end")
            if int(self.range_end) < int(self.range_start):
                raise ValueError("range_end is below range_start")
        return self


class Ports(_Model):
    dhcp: int = Field(default=67, ge=0, le=65535)
    proxy: int = Field(default=4011, ge=0, le=65535)
    tftp: int = Field(default=69, ge=0, le=65535)
    http: int = Field(default=8080, ge=0, le=65535)


class BootConfig(_Model):
    uefi_loader: UefiLoader = UefiLoader.SHIM
    unknown: UnknownPolicy = UnknownPolicy.IMAGE
    kernel: str = "live/vmlinuz"  # paths inside boot_root
    initrd: str = "live/initrd.img"
    cmdline: str = "console=ttyS0,115200n8 console=tty0 quiet"  # the last one, the screen, is /dev/console
    token_ttl_seconds: int = Field(default=6 * 3600, ge=60)
    # Treat an iPXE NIC ROM like a vendor PXE ROM: its first DHCP exchange of a boot gets undionly.kpxe over
    # TFTP, the chained iPXE then gets its script. For QEMU labs (whose NIC ROMs are iPXE) and PCs with iPXE
    # flashed, to exercise the same chain as real PCs.
    chain_ipxe_roms: bool = False
    # A per-boot token goes only to the PC that network-booted: the address fetching a boot script, and
    # every agent call after, must be the machine's MAC on the LAN (provision/neighbors.py).
    bind_tokens: TokenBinding = TokenBinding.AUTO


class DashboardConfig(_Model):
    """The dashboard (docs/dashboard.md): its rack view shows the machines seen in the last ``session_hours``."""

    session_hours: float = Field(default=12.0, gt=0, le=31 * 24)


class HooksConfig(_Model):
    """Post-install hooks (docs/hooks.md): the site's hook folder, and how the server reaches a PC's live
    environment over SSH (its dropbear listens on 22; tests point the server at a dropbear of their own)."""

    dir: Path | None = None  # the site's hooks, with the built-in ones (None: the built-in ones only)
    ssh_port: int = Field(default=22, ge=1, le=65535)
    # the private key the server logs in with (the one key the live environment trusts, baked in when it is
    # built); None: state_dir/ssh/id_ed25519, the key `provision live build` trusts by default
    ssh_key: Path | None = None
    workers: int = Field(default=8, ge=1, le=256)  # machines whose hooks run at once (each one's in order)


class AuthConfig(_Model):
    """The dashboard's logins (docs/dashboard.md): sessions end after ``idle_minutes`` without a request or
    ``session_hours`` after login; ``secure_cookies`` when the dashboard is reached over HTTPS (a proxy)."""

    idle_minutes: float = Field(default=120.0, gt=0, le=7 * 24 * 60)
    session_hours: float = Field(default=12.0, gt=0, le=30 * 24)
    secure_cookies: bool = False


class ErasureConfig(_Model):
    """Donor data erasure (docs/recipes.md, ``erase:``): ``operator`` is the name each drive's erasure record
    (and its certificate) gives as responsible, unless a user acted on the machine from the dashboard or the
    CLI (re-image, lot): then that user. None: "unknown"."""

    operator: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")


class CertificatesConfig(_Model):
    """Certificates of erasure and labels (docs/certificates.md): the workshop's name they state, and the server's
    Ed25519 signing key (None: state_dir/keys/certificates_ed25519, made 0600 on first use; back it up)."""

    workshop: str = Field(default="provision", min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    key: Path | None = None


class ServerConfig(_Model):
    interface: str | None = None
    address: IPv4Address = IPv4Address("198.18.0.1")
    network: IPv4Network | None = None
    http_bind: IPv4Address | None = None  # default: `address`
    dhcp: DhcpConfig = Field(default_factory=DhcpConfig)
    ports: Ports = Field(default_factory=Ports)
    boot: BootConfig = Field(default_factory=BootConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    erasure: ErasureConfig = Field(default_factory=ErasureConfig)
    certificates: CertificatesConfig = Field(default_factory=CertificatesConfig)
    state_dir: Path = Path("/var/lib/provision")
    boot_root: Path = Path("/var/lib/provision/boot")
    templates_dir: Path = Field(default_factory=lambda: data_dir("pxe"))  # the checkout's or the installed one
    recipes_dir: Path = Field(default_factory=lambda: data_dir("recipes"))  # the sample recipes
    image_store: Path | None = None  # default: state_dir/images
    repo_dir: Path | None = None  # the bundles' Debian repository served at /repo/ (default: state_dir/repo)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    @property
    def tokens_bound(self) -> bool:
        """Whether boot tokens and agent calls are bound to the machine's MAC (boot.bind_tokens)."""
        binding = self.boot.bind_tokens
        return binding is TokenBinding.NEIGHBOUR or (binding is TokenBinding.AUTO and self.interface is not None)

    @property
    def images_dir(self) -> Path:
        return self.image_store or self.state_dir / "images"

    @property
    def ssh_key_path(self) -> Path:
        """The server's SSH private key for the live environments (hooks.ssh_key, else the state's)."""
        return self.hooks.ssh_key or self.state_dir / KEY_DIR / KEY_NAME

    @property
    def certificates_key_path(self) -> Path:
        """The certificates' signing key (certificates.key, else the state's)."""
        return self.certificates.key or self.state_dir / "keys" / "certificates_ed25519"

    @property
    def repo_path(self) -> Path:
        """The bundles' repository (provision bundles sync writes it, /repo/ serves it)."""
        return self.repo_dir or self.state_dir / "repo"

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.ports.http}"

    @property
    def http_host(self) -> str:
        return str(self.http_bind or self.address)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> ServerConfig:
    """Defaults, then the YAML file, then overrides (from flags). Raises ConfigError with every problem."""
    data: dict[str, Any] = {}
    doc = None
    file = str(path) if path else "<flags>"
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([Problem(file, None, "", f"cannot read: {exc.strerror}")]) from None
        doc = yamlsrc.load(text, file)
        if doc.problems:
            raise ConfigError(doc.problems)
        if doc.data is not None and not isinstance(doc.data, dict):
            raise ConfigError([Problem(file, 1, "", "the configuration must be a YAML mapping")])
        data = doc.data or {}
    data = _merge(data, overrides or {})
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(yamlsrc.validation_problems(file, doc, exc)) from None
