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
from provision.neighbors import Lookup, mac_of
from provision.states import MachineState, boots_local_disk, never_netbooted, powers_off
from provision.store import Store

log = logging.getLogger(__name__)

CHAIN_WINDOW = 300.0
_SAFE_ARG = re.compile(r"^[A-Za-z0-9._:/=,@%+~-]+$")
_UNSAFE_TEXT = re.compile(r"[^A-Za-z0-9 .,:;()/_-]")
NETBOOT_NOTE_EVERY = 30.0  # seconds: at most one `netboot` event per machine in this window


class BootAction(enum.StrEnum):
    LIVE = "live"  # boot the live environment (inventory, imaging)
    LOCAL = "local"  # boot the local disk
    OFF = "off"  # power off: an erased PC (its last run erase-only, done) has nothing to boot
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


def script_text(value: object) -> str:
    """Text for an `echo` in a boot script: one line of plain characters (no quote, `$`, `;` or newline)."""
    return _UNSAFE_TEXT.sub("?", str(value))[:200]


class Booter:
    """The boot decision and scripts per MAC, and who may get a per-boot token.

    A token (the live environment's credential for the agent API) goes only to the PC that network-booted:
    with ``config.tokens_bound``, the address fetching the script must be the MAC's in the kernel's neighbour
    table (``neighbours``); and while the MAC has a run in flight, only a fresh network boot of it (DHCP or
    TFTP seen from it after the run started: a ``netboot`` event) earns a new token. Otherwise the script
    says why, on the PC's screen, and carries no token."""

    def __init__(self, config: ServerConfig, store: Store, neighbours: Lookup = mac_of) -> None:
        self.config = config
        self.store = store
        self.neighbours = neighbours
        self._noted: dict[str, float] = {}  # mac -> when a netboot event was last recorded
        # What machines are told to fetch from; the server sets the bound port when the config says 0.
        self.http_url = config.http_url
        self._chained: dict[str, tuple[int | None, float]] = {}  # mac -> (ROM's xid or None: vendor ROM, when)
        self._env = jinja2.Environment(  # nosec B701  # boot scripts, not HTML: autoescape off below
            loader=jinja2.FileSystemLoader(str(config.templates_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - boot scripts, not HTML; values pass kernel_arg instead
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["kernel_arg"] = kernel_arg
        self._env.filters["kernel_args"] = kernel_args
        self._env.filters["script_text"] = script_text

    # -------------------------------------------------------------------------------------- decision
    def decision(self, mac: str) -> BootDecision:
        """What ``mac`` boots now: the unknown-machine policy, else the machine's state read by the rules of
        provision.states (verified: its local disk; erased, erase-only: power off; ignored: nothing; else the
        live environment)."""
        machine = self.store.machine(mac)
        if machine is None:
            policy = self.config.boot.unknown
            if policy is UnknownPolicy.IGNORE:
                return BootDecision(mac, BootAction.NONE, "unknown machine, policy 'ignore'")
            return BootDecision(mac, BootAction.LIVE, f"unknown machine, policy '{policy.value}'")
        if never_netbooted(machine.state):
            return BootDecision(mac, BootAction.NONE, "machine is marked ignored")
        if machine.state is MachineState.DONE:
            runs = self.store.runs(mac)
            if powers_off(machine.state, bool(runs) and runs[-1].erase_only):
                return BootDecision(mac, BootAction.OFF, "every drive erased (erase-only): nothing to boot")
        if boots_local_disk(machine.state):
            return BootDecision(mac, BootAction.LOCAL, "last run verified")
        return BootDecision(mac, BootAction.LIVE, f"machine state {machine.state.value}")

    def should_answer(self, mac: str) -> bool:
        """DHCP's question: network-boot this MAC at all? (Asked for each PXE request: a network boot.)"""
        answer = self.decision(mac).action is not BootAction.NONE
        if answer:
            self.note_netboot(mac, "dhcp")
        return answer

    # ---------------------------------------------------------------------------------------- tokens
    def note_netboot(self, mac: str, via: str) -> None:
        """A PXE request (DHCP) or a TFTP read from ``mac``: kept as a `netboot` event while it has a run in
        flight, the evidence that a new boot script may carry a new token."""
        now = time.monotonic()
        last = self._noted.get(mac)
        if last is not None and now - last < NETBOOT_NOTE_EVERY:
            return
        run = self.store.open_run(mac)
        if run is not None:
            self._noted[mac] = now
            self.store.event(mac, "netboot", {"via": via, "run": run.id})

    def address_is(self, mac: str, remote: str | None) -> str | None:
        """Why ``remote`` may not speak for ``mac`` (None: it may, or binding is off)."""
        if not self.config.tokens_bound:
            return None
        found = None if remote is None else self.neighbours(remote)
        if found == mac:
            return None
        return f"address {remote} is {found or 'not in the neighbour table'}, not {mac}"

    def refusal(self, mac: str, remote: str | None) -> str | None:
        """Why a boot script for ``mac`` fetched from ``remote`` may not carry a token (None: it may)."""
        wrong = self.address_is(mac, remote)
        if wrong is not None:
            return f"{wrong}: a boot token goes only to the PC that network-booted"
        run = self.store.open_run(mac)
        if run is None:
            return None
        # in flight while its token lives: its first lifetime, extended by each accepted progress (a long erasure)
        expires = self.store.newest_token_expiry(mac)
        if time.time() > max(run.started + self.config.boot.token_ttl_seconds, expires or 0.0):
            return None
        netboot = self.store.last_event_at(mac, "netboot")
        if netboot is not None and netboot >= run.started:
            return None
        return f"run {run.id[:8]} is under way; power the PC off and on to network-boot it again"

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

    def _live_values(self, mac: str, via: str, remote: str | None) -> dict[str, object]:
        cfg = self.config
        token = self.store.issue_token(mac, via=via, ttl=cfg.boot.token_ttl_seconds, remote=remote)
        return {
            "mac": mac,
            "token": token,
            "server_url": self.http_url,
            "server_ip": str(cfg.address),
            "kernel": cfg.boot.kernel,
            "initrd": cfg.boot.initrd,
            "cmdline": cfg.boot.cmdline,
        }

    def ipxe_script(self, mac: str, remote: str | None = None) -> str:
        """The iPXE script for ``mac`` fetched from ``remote``: live (with a token), refused, local disk, or
        power off (an erased PC)."""
        decision = self.decision(mac)
        log.info("%s: iPXE script: %s (%s)", mac, decision.action.value, decision.reason)
        if decision.action is BootAction.LIVE:
            refused = self.refusal(mac, remote)
            if refused is not None:
                log.warning("%s: no token for %s: %s", mac, remote, refused)
                return self._render("boot.ipxe.j2", action="refused", mac=mac, reason=refused)
            values = self._live_values(mac, "ipxe", remote)
            return self._render("boot.ipxe.j2", action="live", **values)
        if decision.action is BootAction.OFF:
            self.store.local_boot(mac, via="ipxe", action="off")
            return self._render("boot.ipxe.j2", action="off", mac=mac)
        self.store.local_boot(mac, via="ipxe")
        return self._render("boot.ipxe.j2", action="local", mac=mac, server_url=self.http_url)

    def grub_main(self) -> str:
        return self._render("grub.cfg.j2", server_ip=str(self.config.address))

    def grub_host(self, mac: str, remote: str | None = None) -> str:
        """GRUB's per-host config for ``mac`` fetched from ``remote``: live (with a token), refused, local, or
        halt (an erased PC)."""
        decision = self.decision(mac)
        log.info("%s: GRUB config: %s (%s)", mac, decision.action.value, decision.reason)
        if decision.action is BootAction.LIVE:
            refused = self.refusal(mac, remote)
            if refused is not None:
                log.warning("%s: no token for %s: %s", mac, remote, refused)
                return self._render("grub-host.cfg.j2", action="refused", mac=mac, reason=refused)
            values = self._live_values(mac, "grub", remote)
            return self._render("grub-host.cfg.j2", action="live", **values)
        if decision.action is BootAction.OFF:
            self.store.local_boot(mac, via="grub", action="off")
            return self._render("grub-host.cfg.j2", action="off", mac=mac)
        self.store.local_boot(mac, via="grub")
        return self._render("grub-host.cfg.j2", action="local", mac=mac)

    def tftp_file(self, path: str, client_ip: str | None = None) -> bytes | None:
        """Dynamic TFTP files: grub/grub.cfg and grub/hosts/<mac>.cfg; None for the file tree. Every read is
        a sign of a network boot of the client (its MAC from the neighbour table)."""
        if client_ip is not None and self.config.tokens_bound:
            mac = self.neighbours(client_ip)
            if mac is not None:
                self.note_netboot(mac, "tftp")
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
            return self.grub_host(mac, client_ip).encode()
        return None


def templates_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.j2"))
