"""Plain-language reasons: what the server records as a run's or a machine's reason, said as one short
sentence and what to do about it, for the workshop staff in front of the rack.

The reasons the server records today, and where they come from:

- the health gate (``provision.recipes.select.health_failures``): ``reallocated sectors 312 > 5``, ``pending
  sectors ...``, ``NVMe media errors ...``, ``power-on hours ...``, ``RAM MiB 2048 < 4096``, ``largest disk GB
  ...``, ``SMART overall-health self-assessment FAILED``, ``recipe 'x' sends matching machines to repair``;
- the selection (``provision.runs``): no recipe, recipes that do not load, an image missing, a template that
  does not render, no facts in the hello;
- the agent (``provision.agent.main``: ``[what: ]ErrorType: message``): ``NoTargetDisk``, ``AmbiguousTarget``,
  ``TargetTooSmall``, ``VerifyFailed``, ``FetchFailed``, ``ChunkCorrupt``, ``ServerUnreachable``, ``GrowError``
  ...; the server's check of its report (``provision.verdict.report_problems``): ``verified N of M chunks``,
  ``read-back failed``, ``wrote digest ...``;
- the hooks (``provision.postinstall``): ``hook NAME failed with exit status N: ...``, ``hook NAME timed out``,
  ``hook NAME could not run: ...``, ``hook NAME: <SSH or environment problem>``, ``done with warnings: ...``;
- the erasure (``provision.erasing.erasure_reason``): ``N drives erased and verified``, ``drive DEV (serial S)
  failed its verification: ...`` or ``was not erased (METHOD): ...``, ``no drive was erased``, ``DEV skipped:
  ...``, ``set it aside for a technician ...``;
- ``superseded by run ID`` (the PC booted again during a run).

Each rule is a regular expression over one part of the reason (parts are joined with ``"; "``) and gives an
``Explanation``: a stable ``code``, a sentence and an action (gettext msgids marked with ``N_``, translated when
shown, with the values the pattern captured) and the recorded text itself. A reason no rule knows is shown as
recorded, with "call the IT agent". A booted PC that never reached the server is the one reason derived from
silence rather than recorded (``no_network``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace


def N_(message: str) -> str:  # the gettext marker Babel's extractor looks for
    """Mark ``message`` for the catalogue; translated when shown."""
    return message


Params = Mapping[str, str | int]
Gettext = Callable[[str], str]


@dataclass(frozen=True)
class Explanation:
    """One reason in plain words: ``sentence`` and ``action`` are msgids with ``%(name)s`` fields."""

    code: str
    sentence: str
    action: str
    params: Params = field(default_factory=dict)
    recorded: str = ""  # the reason as the server recorded it (shown in small type, for the IT agent)
    severity: str = "bad"  # bad | warn | info

    def render(self, gettext: Gettext) -> tuple[str, str]:
        """(sentence, action) in the language of ``gettext``."""
        values = dict(self.params)
        return gettext(self.sentence) % values, gettext(self.action) % values


CALL_IT = N_("call the IT agent")
REPLACE_DISK = N_("replace the disk")
CHECK_CABLE = N_("check the network cable, then restart the PC")
RESTART = N_("restart the PC from the network")
SEE_PAGE = N_("see the machine page, then restart the PC")
SEE_DETAILS = N_("see the machine page")  # a done machine's warnings: nothing to restart
SET_DRIVE_ASIDE = N_("set the drive aside: replace it or destroy it")


@dataclass(frozen=True)
class Rule:
    code: str
    pattern: re.Pattern[str]
    sentence: str
    action: str
    severity: str = "bad"


def _rule(code: str, pattern: str, sentence: str, action: str, severity: str = "bad") -> Rule:
    return Rule(code, re.compile(pattern, re.IGNORECASE | re.DOTALL), sentence, action, severity)


RULES: tuple[Rule, ...] = (
    # the health gate (repair)
    _rule("disk-smart-failed", r"^SMART overall-health self-assessment FAILED",
          N_("the disk says it is failing (SMART)"), REPLACE_DISK),
    _rule("disk-reallocated", r"^reallocated sectors (?P<value>\d+) > (?P<limit>\d+)",
          N_("disk has %(value)s reallocated sectors"), REPLACE_DISK),
    _rule("disk-pending", r"^pending sectors (?P<value>\d+) > (?P<limit>\d+)",
          N_("disk has %(value)s unreadable sectors"), REPLACE_DISK),
    _rule("disk-media-errors", r"^NVMe media errors (?P<value>\d+) > (?P<limit>\d+)",
          N_("disk has %(value)s media errors"), REPLACE_DISK),
    _rule("disk-worn", r"^power-on hours (?P<value>\d+) > (?P<limit>\d+)",
          N_("disk is worn out: %(value)s hours of use"), REPLACE_DISK),
    _rule("ram-low", r"^RAM MiB (?P<value>\d+) < (?P<limit>\d+)",
          N_("not enough memory: %(value)s MiB, %(limit)s needed"), N_("add memory")),
    _rule("disk-small", r"^largest disk GB (?P<value>\d+) < (?P<limit>\d+)",
          N_("disk too small: %(value)s GB, %(limit)s needed"), N_("fit a larger disk")),
    _rule("recipe-repair", r"^recipe '(?P<recipe>[^']*)' sends matching machines to repair",
          N_("this model is set aside for repair (recipe %(recipe)s)"), N_("take it to the repair bench")),
    # the selection (waiting)
    _rule("no-recipe", r"^no recipe matches", N_("no recipe for this PC"), CALL_IT, "warn"),
    _rule("recipes-broken", r"^recipes do not load", N_("the recipes on the server have an error"), CALL_IT, "warn"),
    _rule("image-missing", r"^image (?P<image>\S+) is not available",
          N_("image %(image)s is missing on the server"), CALL_IT, "warn"),
    _rule("recipe-template", r"^recipe '(?P<recipe>[^']*)' \(", N_("recipe %(recipe)s does not fit this PC"),
          CALL_IT, "warn"),
    _rule("no-facts", r"^(the hello carried no probe|live environment up, no facts)",
          N_("the PC sent no hardware description"), RESTART, "warn"),
    _rule("local-disk", r"^recipe says: boot the local disk", N_("recipe says: keep the installed system"),
          N_("nothing to do"), "info"),
    _rule("recipe-wait", r"^recipe (?P<recipe>\S+) says wait", N_("recipe %(recipe)s says wait"), CALL_IT, "warn"),
    # the agent
    _rule("disk-none", r"NoTargetDisk: .*too small", N_("no disk is large enough for the image"),
          N_("fit a larger disk")),
    _rule("disk-usb-only", r"NoTargetDisk: .*(removable|USB)", N_("only a USB or removable disk was found"),
          N_("fit an internal disk")),
    _rule("disk-missing", r"NoTargetDisk: ", N_("no disk found for the image"), N_("check that a disk is connected")),
    _rule("disk-several", r"AmbiguousTarget: ", N_("several disks: the recipe does not say which one"), CALL_IT),
    _rule("disk-too-small", r"TargetTooSmall: ", N_("the disk is too small for the image"), N_("fit a larger disk")),
    _rule("disk-readback", r"(VerifyFailed: |read-back failed|did not read back)",
          N_("the disk does not read back what was written"), REPLACE_DISK),
    _rule("disk-unusable", r"TargetError: ", N_("the disk cannot be written"), REPLACE_DISK),
    _rule("network-lost", r"(FetchFailed|ServerUnreachable|ChunkCorrupt): ",
          N_("the network failed during the copy"), CHECK_CABLE),
    _rule("grow-failed", r"^growing the root file system failed", N_("the copy is good but resizing it failed"),
          SEE_PAGE),
    _rule("seed-failed", r"^writing the first-boot credential failed", N_("the copy is good but finishing it failed"),
          SEE_PAGE),
    _rule("image-refused", r"(HttpRefused|IndexInvalid): ", N_("the server's image is damaged or gone"), CALL_IT),
    _rule("verify-short", r"^verified (?P<verified>\d+) of (?P<chunks>\d+) chunks",
          N_("only %(verified)s of %(chunks)s parts were checked"), RESTART),
    _rule("wrong-image", r"^(wrote digest|report counts)", N_("the PC wrote another image than planned"), RESTART),
    _rule("superseded", r"^superseded by run", N_("the PC started again during the copy"), N_("nothing to do"),
          "info"),
    # the hooks
    _rule("hook-exit", r"^hook (?P<hook>\S+) failed with exit status (?P<status>-?\d+)",
          N_("step %(hook)s failed (code %(status)s)"), SEE_PAGE),
    _rule("hook-timeout", r"^hook (?P<hook>\S+) timed out", N_("step %(hook)s took too long"), SEE_PAGE),
    _rule("hook-ssh", r"^hook (?P<hook>\S+): .*(SSH|host key)",
          N_("the server could not reach the PC for step %(hook)s"), CHECK_CABLE),
    _rule("hook-error", r"^hook '?(?P<hook>[^\s':]+)'?[: ]", N_("step %(hook)s could not run"), CALL_IT),
    _rule("hooks-error", r"^hooks (could not run|not run)", N_("the finishing steps could not run"), CALL_IT),
    # the erasure
    _rule("erase-verify-failed", r"^drive (?P<device>\S+) \(serial (?P<serial>[^)]*)\) failed its verification",
          N_("drive %(device)s (serial %(serial)s) still holds data after its erasure"), SET_DRIVE_ASIDE),
    _rule("erase-failed", r"^drive (?P<device>\S+) \(serial (?P<serial>[^)]*)\) (was not erased|failed)",
          N_("drive %(device)s (serial %(serial)s) could not be erased"), SET_DRIVE_ASIDE),
    _rule("erase-no-drive", r"^no drive was erased", N_("no drive was found to erase"),
          N_("check that the disks are connected")),
    _rule("erased", r"^(?P<count>\d+) drives? erased and verified", N_("drives erased and verified: %(count)s"),
          N_("nothing to do"), "info"),
    _rule("erase-skipped", r"^(?P<device>[a-z][a-z0-9]*) skipped: ", N_("drive %(device)s was left out of the erasure"),
          N_("nothing to do"), "info"),
)  # fmt: skip

NO_NETWORK = Rule(
    "no-network", re.compile("^$"), N_("no network after boot"), N_("check the cable, then restart the PC")
)
UNKNOWN = Rule("unknown", re.compile("^$"), N_("unexpected problem"), CALL_IT)
WARNINGS = "done with warnings: "  # == provision.postinstall.WARNINGS
AGENT = "agent reports failure: "  # provision.verdict.report_problems


def parts(reason: str) -> list[str]:
    """The parts of a recorded reason, without the agent's and the warnings' prefixes. Problems are joined with
    ``"; "``, which a part may hold too (an agent's message lists disks so): a piece no rule knows belongs to
    the part before it."""
    text = reason.removeprefix(WARNINGS).strip()
    found: list[str] = []
    for segment in text.split("; "):
        piece = segment.strip().removeprefix(AGENT).strip()
        if not piece:
            continue
        if found and not any(r.pattern.search(piece) for r in RULES):
            found[-1] += "; " + piece
        else:
            found.append(piece)
    return found


def explain_part(part: str) -> Explanation:
    """One part of a reason in plain words."""
    for rule in RULES:
        found = rule.pattern.search(part)
        if found is not None:
            params = {k: v for k, v in found.groupdict().items() if v is not None}
            return Explanation(rule.code, rule.sentence, rule.action, params, part, rule.severity)
    return Explanation(UNKNOWN.code, UNKNOWN.sentence, UNKNOWN.action, {}, part)


def explain(reason: str | None) -> list[Explanation]:
    """Every part of a recorded reason in plain words, most useful first (the health gate's own order; what
    only informs, such as the drives an erasure did erase, after the problems)."""
    if not reason:
        return []
    explained = [explain_part(p) for p in parts(reason)]
    known = sorted((e for e in explained if e.code != UNKNOWN.code), key=lambda e: e.severity == "info")
    return known + [e for e in explained if e.code == UNKNOWN.code]


def as_warning(explanation: Explanation) -> Explanation:
    """A problem of a machine that is done all the same (a ``warn`` hook failed): look, nothing to redo."""
    return replace(explanation, action=SEE_DETAILS, severity="warn")


def no_network() -> Explanation:
    """A PC that fetched its boot script but never said hello: the live system found no network."""
    return Explanation(NO_NETWORK.code, NO_NETWORK.sentence, NO_NETWORK.action, {}, "")


def messages() -> list[str]:
    """Every msgid of this module (the catalogue's completeness test reads them)."""
    found = {m for r in (*RULES, NO_NETWORK, UNKNOWN) for m in (r.sentence, r.action)}
    return sorted(found | {CALL_IT, REPLACE_DISK, CHECK_CABLE, RESTART, SEE_PAGE, SEE_DETAILS, SET_DRIVE_ASIDE})
