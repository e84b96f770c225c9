"""How a hook's parameters and the facts it needs become its environment, and the job that carries them.

A hook gets its inputs as environment variables only, never spliced into a command or a shell string: the
values are data from a recipe's templates over a machine's facts, and facts can say anything (``; rm -rf /``
in a DMI serial number). Nothing in provision hands them to a shell; a hook that quotes its variables
(``"$PROVISION_PARAM_HOSTNAME"``) sees them verbatim.

The variables (names checked against provision.wire.hooks.ENV_NAME):

- ``PROVISION_PARAM_<NAME>``: each parameter with a value (given by the recipe, else the header's default;
  an optional parameter without either is unset). As text: ``str`` as it is, ``int`` in decimal, ``bool``
  ``true`` or ``false``, ``list[str]`` one item per line (no trailing line break; an empty list is empty);
- ``PROVISION_FACT_<NAME>``: each fact the header ``needs``, as text by the same rules; unset when unknown
  on this machine;
- ``PROVISION_HOOK`` (the hook's name), ``PROVISION_MAC`` (aa:bb:cc:dd:ee:ff), ``PROVISION_RUN`` (the run id);
- set by the runner, not here: ``PROVISION_ROOT`` (the mounted target root, for ``live`` hooks).

A value with a NUL character, a lone surrogate or over provision.hooks.header.MAX_VALUE_BYTES is refused
(HookEnvError names the hook and the variable), as is an environment over :data:`MAX_ENV_BYTES` in all.
"""

from __future__ import annotations

from collections.abc import Mapping

from provision.errors import FatalError
from provision.facts.derive import FactValue
from provision.hooks.catalog import HookFile
from provision.hooks.header import Header, ParamProblem, ParamValue, Where
from provision.macaddr import normalize_mac
from provision.wire.hooks import ENV_NAME, HookJob

PARAM_PREFIX = "PROVISION_PARAM_"
FACT_PREFIX = "PROVISION_FACT_"
HOOK = "PROVISION_HOOK"
MAC = "PROVISION_MAC"
RUN = "PROVISION_RUN"
ROOT = "PROVISION_ROOT"  # set by the live-side runner for `live` hooks: where the target root is mounted
MAX_ENV_BYTES = 1 << 20  # all the variables of one hook (Linux allows a few MiB of arguments and environment)


class HookEnvError(FatalError):
    """A hook's environment cannot be made: facts ``hook`` and ``key`` (the parameter, fact or variable)."""


def as_text(value: ParamValue | FactValue) -> str:
    """A parameter or fact as the text of its variable (see the module docstring)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "\n".join(value)
    return "" if value is None else value


def param_var(name: str) -> str:
    return PARAM_PREFIX + name.upper()


def fact_var(name: str) -> str:
    return FACT_PREFIX + name.upper()


def _checked(env: dict[str, str], hook: str) -> dict[str, str]:
    total = 0
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name):
            raise HookEnvError(f"hook {hook!r}: {name[:80]!r} is not an environment variable name", hook=hook, key=name)
        if "\0" in value:
            raise HookEnvError(f"hook {hook!r}: {name} holds a NUL character", hook=hook, key=name)
        try:
            total += len(name) + len(value.encode("utf-8")) + 2
        except UnicodeEncodeError:
            raise HookEnvError(f"hook {hook!r}: {name} is not valid text", hook=hook, key=name) from None
    if total > MAX_ENV_BYTES:
        raise HookEnvError(f"hook {hook!r}: environment of {total} bytes; at most {MAX_ENV_BYTES}", hook=hook, key="")
    return env


def hook_env(
    header: Header,
    params: Mapping[str, object],
    facts: Mapping[str, FactValue],
    *,
    mac: str,
    run: int | str,
) -> dict[str, str]:
    """The environment of one hook for one machine: ``params`` (rendered values from the plan, converted to
    their types here again, defaults filled in) and the facts the header needs. Raises HookEnvError."""
    try:
        values = header.resolve(params)
    except ParamProblem as exc:
        key = str(exc).split(":", 1)[0]
        raise HookEnvError(f"hook {header.name!r}: parameter {exc}", hook=header.name, key=key) from None
    env = {HOOK: header.name, MAC: normalize_mac(mac), RUN: str(run)}
    for name, value in values.items():
        env[param_var(name)] = as_text(value)
    for fact in header.needs:
        known = facts.get(fact)
        if known is not None:
            env[fact_var(fact)] = as_text(known)
    return _checked(env, header.name)


def hook_job(
    hook: HookFile,
    env: Mapping[str, str],
    *,
    timeout: int | None = None,
    device: str | None = None,
) -> HookJob:
    """The wire job that runs ``hook`` in the live environment (``target`` and ``live`` hooks; a ``server``
    hook never travels): its checked script, ``env`` from :func:`hook_env`, the header's timeout unless
    ``timeout`` overrides it."""
    where = hook.header.where
    if where is Where.SERVER:
        raise HookEnvError(f"hook {hook.name!r} runs on the server: it is not sent", hook=hook.name, key="where")
    return HookJob(
        name=hook.name,
        where="target" if where is Where.TARGET else "live",
        script=hook.script,
        timeout=timeout or hook.header.timeout,
        env=dict(_checked(dict(env), hook.name)),
        device=device,
    )
