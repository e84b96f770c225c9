"""Machine and run states, the moves allowed between them, and the rules every part of the server reads here.

The rules, stated once:

- A run moves ``booted -> inventoried -> (erasing) -> writing -> verifying -> (hooks) -> done``; an erase-only
  run ``booted -> inventoried -> erasing -> done``; a capture run (docs/capture.md) ``booted -> inventoried ->
  capturing -> done``. ``failed`` from any unfinished state, ``repair`` from
  ``booted``/``inventoried``/``erasing``. ``done``, ``failed`` and ``repair`` are final.
- A run ends ``done`` only with a complete verification of its own digest (the whole image read back right:
  ``read_back`` ok, more than 0 data chunks, every one verified).
- An erase-only run ends ``done`` only when every drive's erasure record of the run is ok (at least one drive,
  each one's method ran and its verification found the pattern: ``erasure_complete``); a drive not ok sends the
  run to ``repair`` with its reason, never ``done``. A run whose plan orders an erasure before its image moves
  to ``writing`` only once that erasure was recorded, complete.
- A capture run ends ``done`` only once the server has read back every chunk of the captured disk, checked its
  sha256 and published the new version (the run then names it: its ``digest`` is not empty); it never writes.
- When a run ends, its machine takes the same state (``done``, ``failed``, ``repair``); while it runs, the
  machine is ``imaging``.
- A machine whose last run is ``done`` boots its local disk, unless that run was erase-only: its disks are
  empty, so it is powered off instead (``powers_off``; neither a blank disk nor a second erasure in a loop);
  an ``ignored`` machine is never network-booted; every other known machine boots the live environment.

``Store`` enforces the run rules inside its transactions (``check_run_move``); ``Booter`` reads the boot rule
(``boots_local_disk``, ``powers_off``, ``never_netbooted``). This module imports nothing of provision but the errors.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from provision.errors import RunConflict, RunError


class MachineState(enum.StrEnum):
    NEW = "new"  # seen by DHCP/HTTP, nothing decided yet
    WAITING = "waiting"  # in the live environment, waiting for an operator or a recipe
    IMAGING = "imaging"  # a run is under way
    DONE = "done"  # last run verified: boots its local disk
    FAILED = "failed"  # last run failed: reason in events
    REPAIR = "repair"  # set aside for a technician
    IGNORED = "ignored"  # never network-booted by this server


class Destination(enum.StrEnum):
    """Where a machine goes once refurbished: what the city's report counts it under. A recipe's
    ``destination:`` (recorded with each run), or a machine's own, set by an operator (it wins)."""

    SCHOOL = "school"
    FAMILY = "family"
    ASSOCIATION = "association"
    RECYCLING = "recycling"  # leaves as parts or for recycling (an erase-only PC, typically)


class RunState(enum.StrEnum):
    BOOTED = "booted"
    INVENTORIED = "inventoried"
    ERASING = "erasing"  # every drive being erased and verified (a plan with ``erase``)
    CAPTURING = "capturing"  # the disk read, its chunks offered and uploaded (a capture run)
    WRITING = "writing"
    VERIFYING = "verifying"
    HOOKS = "hooks"
    DONE = "done"  # only with a complete verification of the run's digest (erase-only: every drive erased ok)
    FAILED = "failed"
    REPAIR = "repair"


FINAL_RUN_STATES = frozenset({RunState.DONE, RunState.FAILED, RunState.REPAIR})
NEXT_RUN_STATES: dict[RunState, frozenset[RunState]] = {
    RunState.BOOTED: frozenset({RunState.INVENTORIED, RunState.FAILED, RunState.REPAIR}),
    RunState.INVENTORIED: frozenset(
        {RunState.ERASING, RunState.WRITING, RunState.CAPTURING, RunState.FAILED, RunState.REPAIR}
    ),
    RunState.CAPTURING: frozenset({RunState.CAPTURING, RunState.DONE, RunState.FAILED}),
    RunState.ERASING: frozenset({RunState.ERASING, RunState.WRITING, RunState.DONE, RunState.FAILED, RunState.REPAIR}),
    RunState.WRITING: frozenset({RunState.WRITING, RunState.VERIFYING, RunState.FAILED}),
    RunState.VERIFYING: frozenset({RunState.VERIFYING, RunState.HOOKS, RunState.DONE, RunState.FAILED}),
    RunState.HOOKS: frozenset({RunState.HOOKS, RunState.DONE, RunState.FAILED}),
}
_MACHINE_WHEN_RUN_ENDS = {
    RunState.DONE: MachineState.DONE,
    RunState.FAILED: MachineState.FAILED,
    RunState.REPAIR: MachineState.REPAIR,
}


def is_final(state: RunState) -> bool:
    return state in FINAL_RUN_STATES


def machine_state_for(run_state: RunState) -> MachineState:
    """The machine's state while its run is in ``run_state``: the run's final state, else ``imaging``."""
    return _MACHINE_WHEN_RUN_ENDS.get(run_state, MachineState.IMAGING)


def verification_complete(read_back_ok: bool, chunks: int, verified: int) -> bool:
    """The whole image read back right: what a ``done`` run needs."""
    return read_back_ok and chunks > 0 and verified == chunks


def erasure_complete(drives_ok: Iterable[bool]) -> bool:
    """Every drive of the run erased and verified: at least one erasure record, and each one ok. What an
    erase-only run's ``done`` (and an erase-then-image run's ``writing``) needs."""
    found = list(drives_ok)
    return bool(found) and all(found)


def check_run_move(
    run_id: str,
    current: RunState,
    target: RunState,
    *,
    digest: str,
    complete_digests: Iterable[str],
    erase: bool = False,
    erase_only: bool = False,
    erasures_ok: Iterable[bool] = (),
    capture: bool = False,
) -> None:
    """Raise unless the run may move from ``current`` to ``target``. ``complete_digests``: the digests of its
    complete verification records (``done`` needs one equal to the run's own ``digest``). ``erase``: the run's
    plan orders an erasure (``erase_only``: and nothing else); ``erasures_ok``: whether each of its drive
    erasure records is ok (``writing`` after an erasure, and an erase-only ``done``, need them all ok).

    RunConflict (409) when the move is not allowed from ``current``; RunError when ``done`` lacks its
    verification or its erasure, or ``writing`` its erasure."""
    if target not in NEXT_RUN_STATES.get(current, frozenset()):
        raise RunConflict(
            f"run {run_id}: {current.value} -> {target.value} is not allowed", run=run_id, state=current.value
        )
    if capture and target in (RunState.ERASING, RunState.WRITING, RunState.VERIFYING, RunState.HOOKS):
        raise RunConflict(f"run {run_id} is a capture: nothing is erased or written", run=run_id, state=current.value)
    if target is RunState.CAPTURING and not capture:
        raise RunConflict(f"run {run_id} is not a capture", run=run_id, state=current.value)
    if capture:
        if target is RunState.DONE and not digest:
            raise RunError(f"run {run_id}: no captured version published", run=run_id)
        return
    if target is RunState.ERASING and not erase:
        raise RunConflict(f"run {run_id}: its plan orders no erasure", run=run_id, state=current.value)
    if erase_only and target in (RunState.WRITING, RunState.VERIFYING, RunState.HOOKS):
        raise RunConflict(f"run {run_id} is erase-only: nothing is written", run=run_id, state=current.value)
    needs_erasure = target is RunState.WRITING or (target is RunState.DONE and erase_only)
    if erase and needs_erasure and current is not RunState.WRITING and not erasure_complete(erasures_ok):
        raise RunError(f"run {run_id}: no complete erasure of every drive recorded", run=run_id)
    if target is RunState.DONE and not erase_only and digest not in set(complete_digests):
        raise RunError(f"run {run_id}: no complete verification of {digest} recorded", run=run_id)


def check_run_open(run_id: str, state: RunState) -> None:
    """Raise RunConflict (409) when the run has ended: nothing more may be recorded for it."""
    if is_final(state):
        raise RunConflict(f"run {run_id} is {state.value} already", run=run_id, state=state.value)


def boots_local_disk(state: MachineState) -> bool:
    """A machine whose last run was verified boots its own disk; the live environment otherwise."""
    return state is MachineState.DONE


def powers_off(state: MachineState, last_run_erase_only: bool) -> bool:
    """A machine whose last run erased it (erase-only, ``done``) has empty disks: it is powered off at its
    next network boot, neither booted from a blank disk nor erased again in a loop."""
    return state is MachineState.DONE and last_run_erase_only


def never_netbooted(state: MachineState) -> bool:
    """A machine the workshop marked ``ignored`` gets no network boot at all."""
    return state is MachineState.IGNORED
