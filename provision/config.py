"""Server configuration: a YAML file, then command-line flags on top, validated as one typed value.

Every setting has a default that runs the demo rack (198.18.0.1 on a lab bridge), so `provision serve` with
only `--interface` and `--address` works. Problems are reported like recipe problems: FILE:LINE: key: message.
"""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

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


class TransferMode(enum.StrEnum):
    AUTO = "auto"  # multicast when multicast.min_agents or more runs want the same image version, else HTTP
    MULTICAST = "multicast"  # the version's carousel, HTTP range repair for what it missed
    UNICAST = "unicast"  # HTTP only


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DhcpConfig(_Model):
    """DHCP on the imaging LAN (docs/dhcp.md)."""

    mode: DhcpMode = Field(
        description="proxy: answer PXE clients with boot information only, another server leases addresses; "
        "full: lease addresses from range_start..range_end too; off: no DHCP at all "
        "(the site's server is configured with `provision dhcp-config`)",
        default=DhcpMode.PROXY,
    )
    range_start: IPv4Address | None = Field(
        description="first address leased in full mode (required there)", default=None
    )
    range_end: IPv4Address | None = Field(description="last address leased in full mode (required there)", default=None)
    netmask: IPv4Address = Field(description="subnet mask given with a lease", default=IPv4Address("255.255.255.0"))
    router: IPv4Address | None = Field(description="default gateway given with a lease (null: none)", default=None)
    dns: list[IPv4Address] = Field(description="DNS servers given with a lease", default_factory=list)
    lease_seconds: int = Field(description="lease time in full mode", default=3600, ge=60, le=7 * 86400)
    offer_seconds: int = Field(
        description="how long an unconfirmed offer holds its address (a PXE ROM requests it within a few seconds)",
        default=10,
        ge=1,
        le=300,
    )
    decline_seconds: int = Field(
        description="how long an address a client declined (found in use) is kept out of offers",
        default=600,
        ge=10,
        le=86400,
    )

    @model_validator(mode="after")
    def _range(self) -> DhcpConfig:
        if self.mode is DhcpMode.FULL:
            if self.range_start is None or self.range_end is None:
                raise ValueError("full DHCP needs range_start and range_end")
            if int(self.range_end) < int(self.range_start):
                raise ValueError("range_end is below range_start")
        return self


class Ports(_Model):
    """The ports the server listens on (0: any free port, for tests)."""

    dhcp: int = Field(description="DHCP server port (full and proxy modes)", default=67, ge=0, le=65535)
    proxy: int = Field(description="proxyDHCP port (PXE boot server discovery)", default=4011, ge=0, le=65535)
    tftp: int = Field(description="TFTP port (boot loaders)", default=69, ge=0, le=65535)
    http: int = Field(
        description="HTTP port: boot scripts, boot files, images, the agent API, the dashboard",
        default=8080,
        ge=0,
        le=65535,
    )


class BootConfig(_Model):
    """What a network-booting PC gets (docs/live.md, docs/api.md)."""

    uefi_loader: UefiLoader = Field(
        description="shim: shimx64.efi -> signed GRUB -> signed kernel, boots with Secure Boot on or off; "
        "ipxe: snponly.efi, unsigned, only for sites that switch Secure Boot off",
        default=UefiLoader.SHIM,
    )
    unknown: UnknownPolicy = Field(
        description="a machine never seen before -- image: boots the live environment and is imaged by its recipe; "
        "register: boots it, reports, and waits for an operator; "
        "ignore: not network-booted (full DHCP: a plain lease only)",
        default=UnknownPolicy.IMAGE,
    )
    kernel: str = Field(description="the live environment's kernel, a path inside boot_root", default="live/vmlinuz")
    initrd: str = Field(description="the live environment's initrd, a path inside boot_root", default="live/initrd.img")
    cmdline: str = Field(
        description="kernel command line of the live environment (the last console, the screen, is /dev/console)",
        default="console=ttyS0,115200n8 console=tty0 quiet",
    )
    token_ttl_seconds: int = Field(
        description="lifetime of a per-boot token (each accepted progress of a run extends it)", default=6 * 3600, ge=60
    )
    chain_ipxe_roms: bool = Field(
        description="treat an iPXE NIC ROM like a vendor PXE ROM: its first DHCP exchange gets undionly.kpxe over TFTP "
        "(QEMU labs, PCs with iPXE flashed)",
        default=False,
    )
    bind_tokens: TokenBinding = Field(
        description="bind a per-boot token to the PC that network-booted (its MAC in the kernel's neighbour table) -- "
        "auto: neighbour when serving an interface, off without one; neighbour: always; off: never (PCs behind "
        "a DHCP relay)",
        default=TokenBinding.AUTO,
    )


class DashboardConfig(_Model):
    """The dashboard (docs/dashboard.md)."""

    session_hours: float = Field(
        description="the rack view shows the machines seen in the last this many hours", default=12.0, gt=0, le=31 * 24
    )


class HooksConfig(_Model):
    """Post-install hooks (docs/hooks.md): the site's hook folder, and how the server reaches a PC's live
    environment over SSH (its dropbear listens on 22; tests point the server at a dropbear of their own)."""

    dir: Path | None = Field(
        description="the site's hook folder, next to the built-in hooks (null: built-in hooks only)", default=None
    )
    ssh_port: int = Field(description="SSH port of the live environment's dropbear", default=22, ge=1, le=65535)
    ssh_key: Path | None = Field(
        description="private key the server logs in to live environments with (the one `provision live build` "
        "bakes in); null: state_dir/ssh/id_ed25519",
        default=None,
    )
    workers: int = Field(
        description="machines whose hooks run at once (each machine's hooks in order)", default=8, ge=1, le=256
    )


class AuthConfig(_Model):
    """The dashboard's logins (docs/dashboard.md)."""

    idle_minutes: float = Field(
        description="a session ends after this many minutes without a request", default=120.0, gt=0, le=7 * 24 * 60
    )
    session_hours: float = Field(
        description="a session ends this many hours after login", default=12.0, gt=0, le=30 * 24
    )
    secure_cookies: bool = Field(
        description="mark cookies Secure: the dashboard is reached over HTTPS (a proxy)", default=False
    )


class ErasureConfig(_Model):
    """Donor data erasure (docs/erasure.md, a recipe's ``erase:``)."""

    operator: str | None = Field(
        description="the name each drive's erasure record (and its certificate) gives as responsible, unless a user "
        'acted on the machine from the dashboard or the CLI; null: "unknown"',
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",
    )


class CertificatesConfig(_Model):
    """Certificates of erasure and labels (docs/certificates.md)."""

    workshop: str = Field(
        description="the workshop's name the certificates and labels state",
        default="provision",
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
    )
    key: Path | None = Field(
        description="the Ed25519 signing key, made 0600 on first use (back it up: `provision backup`); "
        "null: state_dir/keys/certificates_ed25519",
        default=None,
    )


class MulticastConfig(_Model):
    """The rack multicast carousel (docs/multicast.md): how a run's chunks come, and how the sender sends."""

    transfer: TransferMode = Field(
        description="how a run's chunks come, unless its recipe says -- auto: multicast when min_agents or more "
        "runs want the same image version at once, else HTTP; multicast: always the carousel (with HTTP range "
        "repair); unicast: HTTP only",
        default=TransferMode.AUTO,
    )
    min_agents: int = Field(
        description="auto: runs in flight wanting the same version (this one counted) from which it is multicast",
        default=3,
        ge=1,
        le=10000,
    )
    group: IPv4Network = Field(
        description="the multicast groups: one address per image version, chosen from its digest "
        "(administratively scoped 239.0.0.0/8 is the usual place)",
        default=IPv4Network("239.255.18.0/24"),
    )
    port: int = Field(description="UDP port the carousels send to", default=18018, ge=1, le=65535)
    rate: int = Field(
        description="bytes per second each carousel paces to (default: 90 % of 1 Gbit/s)",
        default=112_500_000,
        ge=10_000,
        le=12_500_000_000,
    )
    keepalive_seconds: int = Field(
        description="an agent says keepalive at least this often; one not heard for 3 times as long is dropped",
        default=10,
        ge=1,
        le=3600,
    )
    max_loss: float = Field(
        description="share of datagrams lost above which an agent leaves the carousel and finishes by HTTP",
        default=0.2,
        ge=0,
        le=1,
    )
    recent_minutes: float = Field(
        description="auto: a run in flight counts toward min_agents if it started this recently",
        default=60.0,
        gt=0,
        le=7 * 24 * 60,
    )

    @field_validator("group")
    @classmethod
    def _multicast(cls, group: IPv4Network) -> IPv4Network:
        if not group.network_address.is_multicast or not group.broadcast_address.is_multicast:
            raise ValueError(f"{group} is not inside 224.0.0.0/4 (IPv4 multicast)")
        return group


class ServerConfig(_Model):
    interface: str | None = Field(
        description="the imaging LAN interface: DHCP answers only there (null: any)", default=None
    )
    address: IPv4Address = Field(
        description="this server's address on the imaging LAN", default=IPv4Address("198.18.0.1")
    )
    network: IPv4Network | None = Field(
        description="the imaging LAN's network, e.g. 198.18.0.0/24 (null: not checked); when set, the address, "
        "the full DHCP range, the router and the netmask must agree with it",
        default=None,
    )
    http_bind: IPv4Address | None = Field(description="address the HTTP server binds (null: address)", default=None)
    dhcp: DhcpConfig = Field(default_factory=DhcpConfig)
    ports: Ports = Field(default_factory=Ports)
    boot: BootConfig = Field(default_factory=BootConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    erasure: ErasureConfig = Field(default_factory=ErasureConfig)
    certificates: CertificatesConfig = Field(default_factory=CertificatesConfig)
    multicast: MulticastConfig = Field(default_factory=MulticastConfig)
    state_dir: Path = Field(
        description="the database, keys, leases, probes (`provision backup` saves it)",
        default=Path("/var/lib/provision"),
    )
    boot_root: Path = Field(description="boot files served by TFTP and HTTP", default=Path("/var/lib/provision/boot"))
    templates_dir: Path = Field(
        description="boot script templates",
        default_factory=lambda: data_dir("pxe"),
        json_schema_extra={"default_text": "the package's pxe/"},
    )
    recipes_dir: Path = Field(
        description="the recipes folder",
        default_factory=lambda: data_dir("recipes"),
        json_schema_extra={"default_text": "the package's sample recipes/"},
    )
    image_store: Path | None = Field(
        description="the master images' chunk store (null: state_dir/images)", default=None
    )
    repo_dir: Path | None = Field(
        description="the bundles' Debian repository served at /repo/ (null: state_dir/repo)", default=None
    )
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    # A typo in one address (198.18.1.1 for 198.18.0.1) is caught at start, not by a rack that gets no lease. Field
    # validators (not one model validator), so that `config check` names the line of the key that disagrees.
    @field_validator("network")
    @classmethod
    def _address_inside(cls, network: IPv4Network | None, info: ValidationInfo) -> IPv4Network | None:
        address = info.data.get("address")
        if network is not None and address is not None and address not in network:
            raise ValueError(f"address {address} is outside network {network}")
        return network

    @field_validator("dhcp")
    @classmethod
    def _dhcp_inside(cls, dhcp: DhcpConfig, info: ValidationInfo) -> DhcpConfig:
        network: IPv4Network | None = info.data.get("network")
        if network is None:
            return dhcp
        named = {"range_start": dhcp.range_start, "range_end": dhcp.range_end, "router": dhcp.router}
        outside = [f"{key} {value}" for key, value in named.items() if value is not None and value not in network]
        if outside:
            raise ValueError(f"outside network {network}: {', '.join(outside)}")
        if dhcp.mode is DhcpMode.FULL and dhcp.netmask != network.netmask:
            raise ValueError(f"netmask {dhcp.netmask} is not network {network}'s {network.netmask}")
        return dhcp

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


def check_config(path: Path) -> list[Problem]:
    """Every problem of a configuration file at once, by line (``provision config check``): YAML syntax,
    duplicate keys, unknown keys, wrong types and bad values. [] when ``load_config`` would accept it."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return [Problem(file, None, "", f"cannot read: {reason}")]
    doc = yamlsrc.load(text, file)
    problems = list(doc.problems)
    if doc.data is None and problems:  # not YAML, or a bound exceeded: nothing to validate
        return problems
    if doc.data is not None and not isinstance(doc.data, dict):
        return [*problems, Problem(file, 1, "", "the configuration must be a YAML mapping")]
    try:
        ServerConfig.model_validate(doc.data or {})
    except ValidationError as exc:
        problems += yamlsrc.validation_problems(file, doc, exc)
    return sorted(problems, key=lambda p: (p.line or 0, p.key))


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
