"""The boot decision for one MAC, and the boot scripts that carry it (iPXE, GRUB), rendered from pxe/*.j2.

`Booter` is the seam every protocol asks (pixiecore's Booter): DHCP asks whether to answer a MAC at all,
HTTP and TFTP ask what script to hand it. Rendering is strict: an undefined template name is an error, and
every value that lands on a kernel command line is checked to be one token of safe characters, so no
newline, quote or space from anywhere can be injected into a boot script.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

from provision.config import ServerConfig, UnknownPolicy
from provision.errors import FatalError
from provision.macaddr import BadMac, normalize_mac
from provision.states import boots_local_disk, never_netbooted
from provision.store import Store

log = logging.getLogger(__name__)

CHAIN_WINDOW = 300.0
_SAFE_ARG = re.compile(r"^[A-Za-z0-9._:/=,@%+~-]+$")


class BootAction(enum.StrEnum):
    LIVE = "live"  # boot the live environment (inventory, imaging)
    LOCAL = "local"  # boot the local disk
    NONE = "none"  # do not answer this machine at all


@dataclass(frozen=True)
class BootDecision:
    mac: str
    action: BootAction
    reason: str


class TemplateError(FatalError):
    """A boot template is missing or does not render; carries the template name. A client is only told to
    look at the server's log."""

    @property
    def http_reason(self) -> str:
        return "boot template error, see the server log"


def kernel_arg(value: object) -> str:
    """One kernel command line token; anything else is refused, never quoted around."""
    text = str(value)
    if not _SAFE_ARG.match(text):
        raise ValueError(f"unsafe kernel command line token {text[:80]!r}")
    return text


def kernel_args(text: str) -> str:
    """A space-separated list of tokens (the operator's `boot.cmdline`), each checked."""
    return " ".join(kernel_arg(tok) for tok in text.split())


class Booter:
    def __init__(self, config: ServerConfig, store: Store) -> None:
        self.config = config
        self.store = store
        # What machines are told to fetch from; the server sets the bound port when the config says 0.
        self.http_url = config.http_url
        self._chained: dict[str, tuple[int | None, float]] = {}  # mac -> (ROM's xid or None: vendor ROM, when)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(config.templates_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - boot scripts, not HTML; values pass kernel_arg instead
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["kernel_arg"] = kernel_arg
        self._env.filters["kernel_args"] = kernel_args

    # -------------------------------------------------------------------------------------- decision
    def decision(self, mac: str) -> BootDecision:
        """What ``mac`` boots now: the unknown-machine policy, else the machine's state read by the rules of
        provision.states (verified: its local disk; ignored: nothing; else the live environment)."""
        machine = self.store.machine(mac)
        if machine is None:
            policy = self.config.boot.unknown
            if policy is UnknownPolicy.IGNORE:
                return BootDecision(mac, BootAction.NONE, "unknown machine, policy 'ignore'")
            return BootDecision(mac, BootAction.LIVE, f"unknown machine, policy '{policy.value}'")
        if never_netbooted(machine.state):
            return BootDecision(mac, BootAction.NONE, "machine is marked ignored")
        if boots_local_disk(machine.state):
            return BootDecision(mac, BootAction.LOCAL, "last run verified")
        return BootDecision(mac, BootAction.LIVE, f"machine state {machine.state.value}")

    def should_answer(self, mac: str) -> bool:
        """DHCP's question: network-boot this MAC at all?"""
        return self.decision(mac).action is not BootAction.NONE

    def chain_ipxe(self, mac: str, xid: int, ipxe: bool, now: float | None = None) -> bool:
        """DHCP's question under `boot.chain_ipxe_roms`, asked for every PXE client about to be answered.

        For an iPXE client: is this the NIC ROM (chain it to undionly.kpxe: True) or an iPXE that was
        chained already (give it its script: False)? The first DHCP exchange (xid) of a MAC in a 5-minute
        window is the ROM's (its retransmits and REQUEST carry the same xid), unless a vendor PXE ROM (not
        iPXE) of that MAC was just handed a boot file: then the iPXE that follows is the chained one."""
        if not self.config.boot.chain_ipxe_roms:
            return False
        now = time.monotonic() if now is None else now
        if not ipxe:
            self._chained[mac] = (None, now)
            return False
        seen = self._chained.get(mac)
        if seen is None or now - seen[1] > CHAIN_WINDOW:
            self._chained[mac] = (xid, now)
            log.info("%s: iPXE ROM (xid %08x): chained to the TFTP boot file", mac, xid)
            return True
        return seen[0] == xid

    # ---------------------------------------------------------------------------------------- render
    def _render(self, name: str, **values: object) -> str:
        try:
            return self._env.get_template(name).render(**values)
        except jinja2.TemplateNotFound:
            raise TemplateError(
                f"boot template {name} not found in {self.config.templates_dir}", template=name
            ) from None
        except (jinja2.TemplateError, ValueError) as exc:
            raise TemplateError(f"boot template {name}: {exc}", template=name) from None

    def _live_values(self, mac: str, via: str) -> dict[str, object]:
        cfg = self.config
        token = self.store.issue_token(mac, via=via, ttl=cfg.boot.token_ttl_seconds)
        return {
            "mac": mac,
            "token": token,
            "server_url": self.http_url,
            "server_ip": str(cfg.address),
            "kernel": cfg.boot.kernel,
            "initrd": cfg.boot.initrd,
            "cmdline": cfg.boot.cmdline,
        }

    def ipxe_script(self, mac: str) -> str:
        decision = self.decision(mac)
        log.info("%s: iPXE script: %s (%s)", mac, decision.action.value, decision.reason)
        if decision.action is BootAction.LIVE:
            values = self._live_values(mac, via="ipxe")
            return self._render("boot.ipxe.j2", action="live", **values)
        self.store.local_boot(mac, via="ipxe")
        return self._render("boot.ipxe.j2", action="local", mac=mac, server_url=self.http_url)

    def grub_main(self) -> str:
        return self._render("grub.cfg.j2", server_ip=str(self.config.address))

    def grub_host(self, mac: str) -> str:
        decision = self.decision(mac)
        log.info("%s: GRUB config: %s (%s)", mac, decision.action.value, decision.reason)
        if decision.action is BootAction.LIVE:
            values = self._live_values(mac, via="grub")
            return self._render("grub-host.cfg.j2", action="live", **values)
        self.store.local_boot(mac, via="grub")
        return self._render("grub-host.cfg.j2", action="local", mac=mac)

    def tftp_file(self, path: str) -> bytes | None:
        """Dynamic TFTP files: grub/grub.cfg and grub/hosts/<mac>.cfg; None for the file tree."""
        clean = path.lstrip("/")
        if clean == "grub/grub.cfg":
            return self.grub_main().encode()
        prefix = "grub/hosts/"
        if clean.startswith(prefix) and clean.endswith(".cfg"):
            try:
                mac = normalize_mac(clean[len(prefix) : -len(".cfg")])
            except BadMac:
                log.warning("TFTP: GRUB host config for a non-MAC name %r refused", clean[:80])
                return None
            return self.grub_host(mac).encode()
        return None


def templates_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.j2"))
