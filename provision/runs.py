"""What the agent API does: a hello becomes a recipe choice and, for an image plan, a run; progress moves the
run along; the final report ends it ``done`` (only with a complete read-back of the planned digest) or
``failed`` with every reason (that rule and its records: ``provision.verdict``). Each call checks the per-boot
token first.

The messages are ``provision.wire.api``; the records and the rules are ``provision.store`` and
``provision.states``; the web handlers (``provision.web.api``) only parse, call one method here and answer.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from provision.capturing import Capturing
from provision.credentials import firstboot_secret, same_secret
from provision.delta import UNICAST_SHARE, Deltas, Held, fetched_of, target_of, transfer_note
from provision.erasing import TOKEN_TTL, Erasing, erase_plan
from provision.errors import ConfigError, NotFound, RunConflict, TokenRefused
from provision.facts import Facts, facts_from_dict
from provision.facts.derive import derive
from provision.hooks import Catalog, load_catalog
from provision.images import ImageError, ImageStore, ImageVersion
from provision.multicast import Multicast
from provision.multicast.runcalls import RunCarousels
from provision.postinstall import PostInstall
from provision.probes import ProbeUnreadable, keep_probe
from provision.recipes import Action, Decision, RecipeSet, load_dir, select
from provision.states import MachineState, RunState, check_run_open
from provision.store import Run, Store
from provision.verdict import Verdict
from provision.wire import paths
from provision.wire.api import (
    CaptureAnswer,
    EraseAnswer,
    FirstBoot,
    Hello,
    HelloAnswer,
    ImageAnswer,
    LocalAnswer,
    Plan,
    Progress,
    ProgressAnswer,
    RepairAnswer,
    Report,
    RunAnswer,
    WaitAnswer,
)
from provision.wire.capture import CapturePlan
from provision.wire.carousel import MulticastAnswer, MulticastCall, MulticastPlan
from provision.wire.erasure import ErasePlan

log = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # seconds: at most one stored progress event per run in this window
AddressCheck = Callable[[str, "str | None"], "str | None"]  # (mac, remote) -> why remote is not that PC, or None
CaptureWant = tuple[str, dict[str, Any], "str | None", "str | None"]  # (image, target disk, asked by, recipe)
NO_FACTS = "the hello carried no probe and no facts: nothing to choose a recipe by"


class Runs:
    """The run lifecycle over a store, an image store and a recipe folder (reloaded when it changes)."""

    def __init__(
        self,
        store: Store,
        images: ImageStore | None,
        recipes_dir: Path,
        probes_dir: Path | None = None,
        *,
        key: bytes | None = None,
        address_check: AddressCheck | None = None,
        postinstall: PostInstall | None = None,
        catalog: Callable[[], Catalog] = load_catalog,
        erasure_operator: str | None = None,
        token_ttl: float = TOKEN_TTL,
        multicast: Multicast | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.images = images
        self.recipes_dir = recipes_dir
        self.probes_dir = probes_dir
        self.key = key or secrets.token_bytes(32)  # the server's key: first-boot secrets derive from it
        self.address_check = address_check or _any_address
        self.postinstall = postinstall  # runs the plan's hooks after a verified write (None: none run)
        self.catalog = catalog  # the hooks recipes are checked against (the built-in ones and the site's)
        self._recipes: tuple[tuple[float, ...], RecipeSet] | None = None
        self._last_progress: dict[str, float] = {}
        self.clock = clock  # the throttling of progress and multicast events
        self.token_ttl = token_ttl  # config boot.token_ttl_seconds: each accepted progress extends the token so far
        self.erasing = Erasing(store, self.open_run, erasure_operator, token_ttl)  # erasure progress and reports
        self.multicast = multicast  # the carousels (None: every run's chunks come by HTTP)
        self.carousels = RunCarousels(store, multicast, clock, PROGRESS_EVERY)  # the runs' multicast
        self.deltas = None if images is None else Deltas(store, images)  # what a machine holds (docs/delta.md)
        self.capturing = Capturing(store, images, self.open_run, token_ttl, clock)  # capture runs (docs/capture.md)
        self.verdict = Verdict(store, images)  # a final report's check: done only with a complete read-back

    def recipes(self) -> RecipeSet:
        """The recipe set, loaded again only when a file's mtime (or the file list) changed."""
        files = sorted(self.recipes_dir.glob("*.y*ml"))
        stamp = (self.recipes_dir.stat().st_mtime, *(f.stat().st_mtime for f in files), float(len(files)))
        if self._recipes is None or self._recipes[0] != stamp:
            self._recipes = (stamp, load_dir(self.recipes_dir, self.catalog()))
        return self._recipes[1]

    # ------------------------------------------------------------------------------------------- hello
    def hello(self, msg: Hello, remote: str | None = None) -> HelloAnswer:
        """The live environment's first call: the token checked (the MAC's newest, from the PC that
        network-booted), the hello recorded, the probe kept, then a plan (and a new run), repair, local or
        wait. A token starts one run: the same hello again gets that run's plan again (its answer may have
        been lost), never a second run; once that run ended, the PC must network-boot again."""
        self._check_caller(msg.mac, msg.token, remote)
        started = self.store.run_started_by(msg.token)
        if started is not None:
            pinned = self.store.run_live(started.id)[1]
            if pinned is not None and msg.host_key != pinned:
                raise TokenRefused("the live environment's SSH host key changed during this boot", mac=msg.mac)
            return self._replayed(started)
        self.store.mark_token_used(msg.token)
        detail: dict[str, Any] = {"boot": msg.boot.to_dict(), "remote": remote}
        if msg.warnings:
            detail["probe_warnings"] = msg.warnings
        self.store.event(msg.mac, "hello", detail)
        facts: dict[str, Any] | Facts | None = msg.facts
        if msg.probe is not None:
            facts = self.save_probe(msg.mac, msg.probe)
        if facts is None:
            machine = self.store.machine(msg.mac)
            if machine is not None and machine.state is MachineState.NEW:
                self.store.set_state(msg.mac, MachineState.WAITING, "live environment up, no facts yet")
            log.info("%s: hello: firmware %s, secure boot %s", msg.mac, msg.boot.firmware, msg.boot.secure_boot)
            return WaitAnswer(NO_FACTS)
        try:
            derived = derive(facts if isinstance(facts, Facts) else facts_from_dict(facts))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ProbeUnreadable(f"facts do not read: {str(exc)[:300]}", mac=msg.mac) from None
        answer = self.plan_for(msg.mac, derived, msg.token, live=(remote, msg.host_key), capture=bool(msg.capture))
        log.info("%s: hello with facts: %s", msg.mac, answer.action)
        return answer

    def _check_caller(self, mac: str, token: str, remote: str | None, run: str | None = None) -> None:
        """TokenRefused unless ``token`` is the MAC's newest unexpired one and ``remote`` is that MAC."""
        wrong = self.address_check(mac, remote)
        if wrong is not None or not self.store.check_token(mac, token):
            why = wrong or "wrong or expired boot token"
            log.warning("%s: %s refused: %s (from %s)", mac, f"run {run} call" if run else "hello", why, remote)
            raise TokenRefused(
                "wrong or expired boot token" if wrong is None else f"refused: {wrong}", mac=mac, run=run
            )

    def _replayed(self, run: Run) -> HelloAnswer:
        """The answer a token's first hello got, for the same hello again (the run still open)."""
        check_run_open(run.id, run.state)
        plan = self.store.run_plan(run.id)
        if plan is None:
            raise RunConflict(f"run {run.id} has no plan to give again", run=run.id, state=run.state.value)
        log.info("%s: hello again with the token of run %s: the same plan", run.mac, run.id)
        if run.erase_only:
            return EraseAnswer(run=run.id, erase=ErasePlan.from_dict(plan["erase"]), recipe=run.recipe)
        if run.capture is not None:
            return CaptureAnswer(run=run.id, capture=CapturePlan.from_dict(plan["capture"]), recipe=run.recipe)
        secret = firstboot_secret(self.key, run.id)
        return ImageAnswer(run=run.id, recipe=run.recipe, plan=Plan.from_dict({**plan, "firstboot_secret": secret}))

    def save_probe(self, mac: str, files: dict[str, str]) -> Facts:
        """Keep the raw probe of ``mac`` and read its facts (``provision.probes.keep_probe``)."""
        return keep_probe(self.probes_dir, mac, files)

    def _wait(self, mac: str, reason: str, **machine: str | None) -> WaitAnswer:
        self.store.set_state(mac, MachineState.WAITING, reason, **machine)
        return WaitAnswer(reason)

    def plan_for(
        self,
        mac: str,
        derived: dict[str, Any],
        token: str | None = None,
        live: tuple[str | None, str | None] = (None, None),
        capture: bool = False,
    ) -> HelloAnswer:
        """Select a recipe for the machine's facts: an image plan (and a new run), repair, local or wait. A capture
        asked for the machine (or by its recipe: ``capture: NAME``) comes first, for an agent that can (``capture``)."""
        ident = {k: _text(derived.get(k)) for k in ("vendor", "product", "serial")}
        request = self.store.pending_capture(mac)
        if request is not None:
            want: CaptureWant = (request.image, request.target_disk, request.requested_by, None)
            return self._capture(mac, derived, want, token, live, capture, ident)
        try:
            decision = select(self.recipes(), derived)
        except (ConfigError, OSError) as exc:
            log.error("%s: recipes in %s do not load: %s", mac, self.recipes_dir, exc)
            return self._wait(mac, f"recipes do not load: {str(exc)[:300]}", **ident)
        recipe = decision.recipe.name if decision.recipe else None
        reasons = list(decision.reasons)
        chosen = {"action": decision.action.value, "recipe": recipe, "reasons": reasons}
        # the machine's class and destination: what the city's report counts a machine set aside here under
        self.store.event(mac, "decision", {**chosen, "class": _text(derived.get("form_factor")),
                                           "destination": _destination(decision)})  # fmt: skip
        if decision.action is Action.REPAIR:
            self.store.set_state(mac, MachineState.REPAIR, "; ".join(reasons), recipe=recipe, **ident)
            return RepairAnswer(reasons, recipe)
        if decision.action is Action.LOCAL:
            waiting = self._wait(mac, "recipe says: boot the local disk", recipe=recipe, **ident)
            return LocalAnswer(waiting.reason)
        if decision.action is Action.ERASE and decision.plan is not None and decision.plan.erase is not None:
            self.store.set_state(mac, MachineState.WAITING, None, recipe=recipe, **ident)
            return self.erasing.start(mac, recipe, decision.plan.erase, token=token, live=live,
                                      facts=_json_facts(derived), destination=_destination(decision))  # fmt: skip
        if decision.action is Action.IMAGE and decision.plan is not None and decision.plan.capture is not None:
            want = (decision.plan.capture, decision.plan.target_disk, None, recipe)
            return self._capture(mac, derived, want, token, live, capture, ident)
        if decision.action is not Action.IMAGE or decision.plan is None or decision.plan.image is None:
            return self._wait(mac, "; ".join(reasons) or f"recipe {recipe} says wait", recipe=recipe, **ident)
        plan, image = decision.plan, decision.plan.image
        try:
            if self.images is None:
                raise ImageError("this server has no image store")
            version = self.images.resolve(image)
        except ImageError as exc:
            reason = f"image {plan.image} is not available: {exc}"
            self.store.event(mac, "image-missing", {"image": plan.image, "recipe": recipe, "reason": str(exc)})
            return self._wait(mac, reason, recipe=recipe, **ident)
        self.store.set_state(mac, MachineState.WAITING, None, recipe=recipe, **ident)
        erase = plan.erase
        held = None if self.deltas is None else self.deltas.held(mac, version, target_disk=plan.target_disk,
                                                                   erase=erase is not None)  # fmt: skip
        given = Plan(
            image=version.name,
            version=version.label,
            digest=version.digest,
            index_url=paths.image_index(version.name, version.digest),
            wipe=plan.wipe,
            target_disk=plan.target_disk,
            grow_root=plan.grow_root,
            hostname=plan.hostname,
            hooks=plan.hooks,
            erase=None if erase is None else erase_plan(erase, self.erasing.lot_for(mac, recipe, erase), only=False),
            multicast=self._transfer(mac, decision, version, held),
            held=None if held is None else held.plan,
        )
        run = self.store.create_run(
            mac, recipe=recipe, image=version.name, label=version.label, digest=version.digest, token=token,
            plan=given.to_dict(), live_address=live[0], host_key=live[1], facts=_json_facts(derived),
            destination=_destination(decision), held=given.held,
        )  # fmt: skip
        return ImageAnswer(
            run=run.id, recipe=recipe, plan=replace(given, firstboot_secret=firstboot_secret(self.key, run.id))
        )

    def _capture(
        self, mac: str, derived: dict[str, Any], want: CaptureWant,
        token: str | None, live: tuple[str | None, str | None], able: bool, ident: dict[str, str | None],
    ) -> HelloAnswer:  # fmt: skip
        """A capture run (provision.capturing), or a wait; ``want``: (image, target disk, asked by, recipe)."""
        image, disk, by, recipe = want
        return self.capturing.answer(mac, image, recipe=recipe, target_disk=disk, requested_by=by, token=token,
                                     live=live, facts=_json_facts(derived), able=able, ident=ident)  # fmt: skip

    def _transfer(self, mac: str, decision: Decision, version: ImageVersion, held: Held | None) -> MulticastPlan | None:
        """The plan's carousel when the new run's chunks come by multicast (provision.multicast.runcalls); a
        small delta by HTTP (provision.delta)."""
        small = None
        if self.deltas is not None and self.multicast is not None:
            try:
                small = int(UNICAST_SHARE * sum(self.deltas.sizes(version).values()))
            except OSError as exc:
                log.warning("%s: sizes of %s's chunks not read: %s", mac, version.ref, exc)
        wanted = None if decision.recipe is None else decision.recipe.recipe.transfer
        return self.carousels.transfer(mac, wanted, version.name, version.digest, http_because=transfer_note(held),
                                       small=small)  # fmt: skip

    # -------------------------------------------------------------------------------------------- runs
    def open_run(self, run_id: str, token: str, remote: str | None = None) -> Run:
        """The run a call names, still open, called with the token that started it (its MAC's newest) from
        the PC itself. NotFound (404), TokenRefused (403), RunConflict (409)."""
        run = self.store.run(run_id)
        if run is None:
            raise NotFound("no such run")
        self._check_caller(run.mac, token, remote, run.id)
        if not self.store.run_token_matches(run.id, token):
            log.warning("%s: run %s call refused: not the token that started it (from %s)", run.mac, run.id, remote)
            raise TokenRefused("this boot token did not start this run", run=run.id)
        check_run_open(run.id, run.state)
        return run

    def firstboot(self, msg: FirstBoot, remote: str | None = None) -> None:
        """An installed system's first (or later) boot, proven by its run's first-boot secret: recorded as an
        event of the machine. Unknown machines are not created; nothing changes a machine's state or plan."""
        if self.store.machine(msg.mac) is None:
            raise NotFound("unknown machine", mac=msg.mac)
        proven = [
            r
            for r in self.store.runs(msg.mac)
            if msg.secret and same_secret(firstboot_secret(self.key, r.id), msg.secret)
        ]
        if not proven:
            log.warning("%s: %s callback refused: first-boot credential %s (from %s)", msg.mac, msg.event,
                        "wrong" if msg.secret else "missing", remote)  # fmt: skip
            raise TokenRefused("first-boot credential missing or wrong", mac=msg.mac)
        detail = {k: v for k, v in msg.to_dict().items() if k not in ("mac", "event", "secret")}
        given = self.store.machine_hostname(msg.mac)
        if msg.hostname is not None and given is not None:
            detail["hostname_matches"] = msg.hostname.lower() == given.lower()
            if not detail["hostname_matches"]:
                log.warning("%s: %s reports host name %r, its hostname hook gave %r", msg.mac, msg.event,
                            msg.hostname[:64], given)  # fmt: skip
        self.store.event(msg.mac, msg.event, {**detail, "run": proven[0].id, "remote": remote})
        log.info("%s: %s of %s (%s, secure boot %s)", msg.mac, msg.event, msg.label, msg.firmware, msg.secure_boot)

    def progress(self, run_id: str, msg: Progress, remote: str | None = None) -> ProgressAnswer:
        """Record the stage; a progress event at most every PROGRESS_EVERY seconds per run. The run's token
        lives ``token_ttl`` seconds more (one store transaction with the move)."""
        with self.store.atomic():
            run = self.open_run(run_id, msg.token, remote)
            stage = RunState(msg.stage)
            if run.state is not stage:  # a capture writes nothing: its bytes are the disk's, read
                written = None if run.capture is not None else msg.bytes_done
                run = self.store.set_run_state(run.id, stage, bytes_written=written, mean_rate=msg.rate)
            self.store.extend_token(run.mac, msg.token, self.token_ttl)
            now = self.clock()
            last = self._last_progress.get(run.id)
            if last is None or now - last >= PROGRESS_EVERY or msg.bytes_done >= msg.bytes_total:
                self._last_progress[run.id] = now
                detail = {"run": run.id, "stage": stage.value, "bytes_done": msg.bytes_done,
                          "bytes_total": msg.bytes_total}  # fmt: skip
                self.store.event(run.mac, "progress", {**detail, "rate": msg.rate})
        return ProgressAnswer(run.id, run.state.value)

    def multicast_call(self, run_id: str, msg: MulticastCall, remote: str | None = None) -> MulticastAnswer:
        """An agent's join, keepalive or leave of its run's carousel, checked like progress (the token that
        started the run, the run open), then ``RunCarousels.call`` (its plan must be multicast)."""
        return self.carousels.call(self.open_run(run_id, msg.token, remote), msg)

    def report(self, run_id: str, msg: Report, remote: str | None = None) -> RunAnswer:
        """The end of a run: the writer's and grow's figures kept as events, then a failure recorded with its
        reason, or the verification recorded and the run ended done only when it is consistent. All of it is
        one store transaction: a report the store refuses part-way (503) keeps nothing, and its retry records
        each thing once."""
        with self.store.atomic():
            answer = self._report(run_id, msg, remote)
        self.carousels.ended(answer.run)  # after the commit: a stuck carousel never holds the store's transaction
        if answer.state == RunState.HOOKS.value and self.postinstall is not None:
            plan = self.store.run_plan(answer.run) or {}
            run = self.store.run(answer.run)
            if run is not None:
                self.postinstall.start(run, plan.get("hooks") or [], self.store.run_facts(run.id))
        return answer

    def _report(self, run_id: str, msg: Report, remote: str | None) -> RunAnswer:
        run = self.open_run(run_id, msg.token, remote)
        if run.capture is not None:  # a capture ends with capture/done; a report only fails it
            return self.capturing.report(run, msg)
        for kind, extra in (("write", msg.writer), ("grow", msg.grow)):
            if extra is not None:
                self.store.event(run.mac, kind, {"run": run.id, **extra})
        self._last_progress.pop(run.id, None)
        self.carousels.reported(run.id)
        if msg.transfer is not None:
            self.store.record_transfer(run.id, msg.transfer)
        self.store.record_delta(run.id, fetched=fetched_of(msg), verified=None, target=target_of(msg))
        if msg.report is None:
            reason = msg.reason or "no reason given"
            error = {"error": msg.error} if msg.error else {}
            self.store.event(run.mac, "run-failed", {"run": run.id, "reason": reason, **error})
            run = self.store.set_run_state(run.id, RunState.FAILED, reason)
            log.info("%s: run %s failed: %s", run.mac, run.id, run.reason)
            return RunAnswer(run.id, run.state.value, run.reason)
        if msg.error is not None:
            self.store.event(run.mac, "run-error", {"run": run.id, "error": msg.error})
        run = self.verdict.judge(run, msg, msg.report, runs_hooks=self.postinstall is not None)
        log.info("%s: run %s %s%s", run.mac, run.id, run.state.value, f": {run.reason}" if run.reason else "")
        return RunAnswer(run.id, run.state.value, run.reason)


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:200]


def _destination(decision: Decision) -> str | None:
    """The destination the chosen recipe gives its machines (recorded with the run, for the city's report)."""
    found = None if decision.recipe is None else decision.recipe.recipe.destination
    return None if found is None else found.value


def _json_facts(derived: dict[str, Any]) -> dict[str, Any]:
    """The derived facts as JSON values (what a hook's environment is made from)."""
    return {k: v if isinstance(v, str | int | bool | list | type(None)) else str(v) for k, v in derived.items()}


def _any_address(mac: str, remote: str | None) -> str | None:
    return None
