"""Post-install: after a run's verified write, the server runs the recipe's hooks, in order, then ends the run.

- ``target`` and ``live`` hooks run in the PC's live environment over SSH (provision.ssh: the server's key,
  the host key the hello reported pinned); ``server`` hooks run here, with the machine's record as JSON on
  stdin. Every hook's result (exit code, timeout, output, duration) is kept with the run.
- A hook that fails with ``on_failure: fail`` stops the run: ``failed`` with the hook's name and what it said.
  One with ``on_failure: warn`` lets it go on; the run ends ``done`` with the warnings as its reason.
- The live environment unreachable, another host key, a key it refuses, a hook unknown to the catalog or a
  parameter that no longer fits: the run fails with that reason, in plain words.
- Runs are worked on in a bounded pool of threads (``workers``); the hooks of one run one after the other.
- The ``hostname`` hook's name is made unique in the store before it runs (``Store.claim_hostname``: a name
  another machine has gets ``-2``, ``-3`` ...; kept on the machine with a ``hostname`` event).
- ``rerun``: one hook run again by hand (``provision hooks run``) in a machine's live environment, the result
  kept with the run (``rerun``), the run's state left as it is.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from provision.errors import FatalError, ProvisionError, RunConflict
from provision.hooks import Catalog, HookEnvError, HookFile, OnFailure, ParamType, Where, hook_env, hook_job
from provision.logcontext import bound
from provision.ssh import HostKey, LiveSession, SshError
from provision.states import RunState
from provision.store import Run, Store
from provision.store.records import HookRecord
from provision.wire.hooks import MAX_OUTPUT, HookResult

log = logging.getLogger(__name__)

WORKERS = 8
SERVER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Connect = Callable[[str, HostKey, Path], LiveSession]
BUNDLE_HOOK = "bundle"  # the built-in hook that installs a bundle (its ``key`` parameter: the repository's key)
HOSTNAME_HOOK = "hostname"  # the built-in hook whose parameter ``hostname`` the server makes unique
HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # an RFC 1123 label, as the hook checks
WARNINGS = "done with warnings: "  # the reason of a run done although warn hooks failed starts so
BUSY = (RunState.WRITING, RunState.VERIFYING, RunState.HOOKS)  # a hook run by hand waits for these to end


class RerunRefused(FatalError):
    """A hook cannot be run again by hand now: no live environment known, the disk being written, its hooks
    running, an unknown hook."""


@dataclass(frozen=True)
class HookCall:
    """One hook of a plan: its name and the parameters the recipe rendered for this machine."""

    name: str
    params: Mapping[str, object]
    timeout: int | None = None  # the recipe's override of the header's
    on_failure: OnFailure | None = None  # the recipe's override of the header's

    @classmethod
    def from_plan(cls, entry: Mapping[str, Any]) -> HookCall:
        timeout, on_failure = entry.get("timeout"), entry.get("on_failure")
        return cls(
            str(entry.get("name", "")), dict(entry.get("params") or {}),
            timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else None,
            OnFailure(on_failure) if on_failure in ("fail", "warn") else None,
        )  # fmt: skip


def machine_record(run: Run, facts: Mapping[str, Any]) -> dict[str, Any]:
    """What a ``server`` hook reads on stdin: the machine as the workshop labels it."""
    keys = ("vendor", "product", "model", "serial", "cpu_model", "cpu_cores", "ram_mb", "disk_gb", "form_factor")
    return {
        "mac": run.mac, "run": run.id, "recipe": run.recipe, "image": run.image, "version": run.label,
        "digest": run.digest, "date": time.strftime("%Y-%m-%d", time.gmtime()),
        **{k: facts.get(k) for k in keys},
    }  # fmt: skip


class PostInstall:
    """The hooks of runs whose write is verified, in a bounded pool; ``finish`` ends each run."""

    def __init__(
        self,
        store: Store,
        catalog: Callable[[], Catalog],
        server_key: Path,
        *,
        workers: int = WORKERS,
        connect: Connect | None = None,
        port: int = 22,
        state_dir: Path | None = None,
        repo_key: Path | None = None,
    ) -> None:
        self.store = store
        # the bundles' repository's armored public key: given to each bundle hook that names none, so the PC
        # trusts the key that came over the server's SSH session (host key pinned), not one fetched over HTTP
        self.repo_key = repo_key
        self.state_dir = state_dir  # PROVISION_STATE of server hooks (the label hook writes under it)
        self.catalog = catalog
        self.server_key = server_key
        self.connect = connect or (lambda address, key, path: LiveSession(address, key, path, port=port))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hooks")

    def start(self, run: Run, hooks: Sequence[Mapping[str, Any]], facts: Mapping[str, Any]) -> None:
        """Run ``hooks`` for ``run`` (in state ``hooks``) in the pool; the run ends when they have run."""
        calls = [HookCall.from_plan(h) for h in hooks]
        self._pool.submit(self._guarded, run, calls, dict(facts))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------------------ work
    def _guarded(self, run: Run, calls: list[HookCall], facts: dict[str, Any]) -> None:
        with bound(mac=run.mac, run=run.id):  # a pool thread: every line of the run's hooks says whose they are
            try:
                self.run_hooks(run, calls, facts)
            except Exception as exc:  # a bug must still end the run, never leave it in `hooks`
                log.exception("%s: run %s: hooks failed unexpectedly", run.mac, run.id)
                self._end(run, RunState.FAILED, f"hooks could not run: {type(exc).__name__}: {exc}")

    def run_hooks(self, run: Run, calls: Sequence[HookCall], facts: Mapping[str, Any]) -> Run:
        """Run every hook of ``calls`` in order; the run's final state."""
        catalog = self.catalog()
        warnings: list[str] = []
        live = _Live(lambda: self._session(run))
        try:
            for position, call in enumerate(calls):
                hook = catalog.get(call.name)
                if hook is None:
                    return self._end(run, RunState.FAILED, f"hook {call.name!r} is not in the server's hooks")
                try:
                    if hook.name == HOSTNAME_HOOK:
                        call = self.unique_hostname(run, call)
                    result = self._run_one(run, hook, call, facts, live)
                except (HookEnvError, SshError) as exc:
                    return self._end(run, RunState.FAILED, f"hook {call.name}: {exc}")
                where, on_failure = hook.header.where.value, call.on_failure or hook.header.on_failure
                self.store.record_hook(run.id, position, where, on_failure.value, result)
                log.info("%s: run %s: hook %s %s in %.1f s", run.mac, run.id, hook.name,
                         "ok" if result.ok else _failure(result), result.seconds)  # fmt: skip
                if not result.ok:
                    why = f"hook {hook.name} {_failure(result)}{_tail(result.output)}"
                    if on_failure is OnFailure.FAIL:
                        return self._end(run, RunState.FAILED, why)
                    warnings.append(why)
        finally:
            live.close()
        return self._end(run, RunState.DONE, WARNINGS + "; ".join(warnings) if warnings else None)

    def _run_one(self, run: Run, hook: HookFile, call: HookCall, facts: Mapping[str, Any], live: _Live) -> HookResult:
        """One hook: on the server, or in the live environment (``live`` connects on first use)."""
        if hook.name == BUNDLE_HOOK and not call.params.get("key"):
            call = self._with_repo_key(run, call)
        env = hook_env(hook.header, call.params, facts, mac=run.mac, run=run.id)
        timeout = call.timeout or hook.header.timeout
        if hook.header.where is Where.SERVER:
            extra = {"PROVISION_STATE": str(self.state_dir)} if self.state_dir else {}
            return run_server_hook(hook, {**env, **extra}, machine_record(run, facts), timeout)
        return live.session().run_hook(hook_job(hook, env, timeout=timeout))

    def _with_repo_key(self, run: Run, call: HookCall) -> HookCall:
        """The bundle hook's call with the repository's public key (when the server has one: a sync made it)."""
        if self.repo_key is None:
            return call
        try:
            key = self.repo_key.read_text(encoding="ascii")
        except FileNotFoundError:
            log.warning("%s: run %s: no repository key at %s (provision bundles sync makes it): the PC fetches it "
                        "from the server over HTTP", run.mac, run.id, self.repo_key)  # fmt: skip
            return call
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: run %s: repository key %s unreadable: %s", run.mac, run.id, self.repo_key, exc)
            return call
        return replace(call, params={**call.params, "key": key.strip()})

    def unique_hostname(self, run: Run, call: HookCall) -> HookCall:
        """The ``hostname`` hook's call with its name made unique in the store (claimed for the run's machine).
        A value that is not a host name is left as it is: the hook refuses it with its own plain message."""
        wanted = call.params.get("hostname")
        if not isinstance(wanted, str) or not HOSTNAME.fullmatch(wanted):
            return call
        given = self.store.claim_hostname(run.id, wanted)
        if given != wanted:
            log.info("%s: run %s: host name %s is another machine's: %s", run.mac, run.id, wanted, given)
        return replace(call, params={**call.params, "hostname": given})

    def rerun(self, mac: str, name: str, given: Sequence[tuple[str, str]] = ()) -> tuple[Run, HookRecord]:
        """Run hook ``name`` again on ``mac``, in the live environment its newest run's hello reported (address,
        pinned host key), with the parameters that run's plan gave it and ``given`` (``(name, text)`` pairs,
        converted to the parameter's type; a ``list[str]`` parameter takes one item per pair). The result is
        kept with that run (``rerun``); the run's state does not change. RerunRefused, HookEnvError, SshError."""
        run = self.store.live_run(mac)
        if run is None:
            raise RerunRefused(f"{mac}: no run of this machine reported a live environment: nothing to run a hook in",
                               mac=mac)  # fmt: skip
        if run.state in BUSY:
            raise RunConflict(f"{mac}: run {run.id} is {run.state.value}: wait until it ends", run=run.id,
                              state=run.state.value)  # fmt: skip
        hook = self.catalog().get(name)
        if hook is None:
            raise RerunRefused(f"no hook {name!r} in the server's hooks (provision hooks list)", hook=name[:64])
        planned = [h for h in (self.store.run_plan(run.id) or {}).get("hooks") or [] if h.get("name") == name]
        call = HookCall.from_plan(planned[0]) if planned else HookCall(name, {})
        call = replace(call, params={**call.params, **given_params(hook, given)})
        if hook.name == HOSTNAME_HOOK:
            call = self.unique_hostname(run, call)
        live = _Live(lambda: self._session(run))
        try:
            result = self._run_one(run, hook, call, self.store.run_facts(run.id), live)
        finally:
            live.close()
        on_failure = call.on_failure or hook.header.on_failure
        record = self.store.record_hook(run.id, 0, hook.header.where.value, on_failure.value, result, rerun=True)
        log.info("%s: run %s: hook %s run again: %s", run.mac, run.id, name, "ok" if result.ok else _failure(result))
        return run, record

    def _session(self, run: Run) -> LiveSession:
        address, key = self.store.run_live(run.id)
        if address is None or key is None:
            raise SshError("the live environment reported no SSH host key in its hello: no hook can run there")
        if not self.server_key.is_file():
            raise SshError(f"the server's SSH key {self.server_key} is missing: no hook can run")
        return self.connect(address, HostKey.parse(key), self.server_key)

    def _end(self, run: Run, state: RunState, reason: str | None) -> Run:
        try:
            return self.store.set_run_state(run.id, state, reason[:2000] if reason else None)
        except ProvisionError as exc:  # superseded meanwhile (the PC booted again)
            log.warning("%s: run %s not ended %s: %s", run.mac, run.id, state.value, exc)
            return self.store.run(run.id) or run


class _Live:
    """The SSH session of one run's live environment, made when the first hook needs it, closed once."""

    def __init__(self, connect: Callable[[], LiveSession]) -> None:
        self._connect = connect
        self._session: LiveSession | None = None

    def session(self) -> LiveSession:
        if self._session is None:
            self._session = self._connect()
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def given_params(hook: HookFile, given: Sequence[tuple[str, str]]) -> dict[str, object]:
    """``(name, text)`` pairs as parameter values: a ``list[str]`` parameter collects one item per pair, any
    other takes the last text (converted to its type when the hook's environment is made)."""
    values: dict[str, object] = {}
    for key, text in given:
        param = hook.header.params.get(key)
        if param is not None and param.type is ParamType.LIST:
            items = values.setdefault(key, [])
            assert isinstance(items, list)
            items.append(text)
        else:
            values[key] = text
    return values


def describe(result: HookResult | HookRecord) -> str:
    """How a hook ended, in words: ``ok``, ``failed with exit status 3``, ``timed out``, ``could not run: …``."""
    return "ok" if result.ok else _failure(result)


def _failure(result: HookResult | HookRecord) -> str:
    if result.error is not None:
        return f"could not run: {result.error}"
    if result.timed_out:
        return "timed out"
    return f"failed with exit status {result.exit_code}"


def _tail(output: str, lines: int = 3) -> str:
    last = [line for line in output.strip().splitlines() if line.strip()][-lines:]
    return f": {' / '.join(last)[:300]}" if last else ""


def run_server_hook(hook: HookFile, env: Mapping[str, str], record: Mapping[str, Any], timeout: int) -> HookResult:
    """A ``server`` hook: its file run here (argument list, own process group), the machine's record as JSON
    on stdin, a clean environment plus ``env``; killed with its group at its timeout."""
    started = time.monotonic()
    clean = {"PATH": SERVER_PATH, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root"), **env}
    try:
        proc = subprocess.Popen(
            [str(hook.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=clean, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        return HookResult(hook.name, None, False, 0.0, error=f"cannot run {hook.path}: {exc.strerror or exc}")
    try:
        out, _ = proc.communicate(json.dumps(record).encode(), timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    text = out.decode("utf-8", "replace")
    kept = text if len(text) <= MAX_OUTPUT else text[: MAX_OUTPUT // 2] + "\n[...]\n" + text[-MAX_OUTPUT // 2 :]
    seconds = round(time.monotonic() - started, 3)
    return HookResult(hook.name, None if timed_out else proc.returncode, timed_out, seconds, kept, len(out))
