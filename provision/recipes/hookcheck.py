"""A recipe's ``hooks:`` checked against the hook catalog (provision.hooks) at ``recipes check`` time.

For each entry: the hook exists; every parameter given is one the hook's header declares; every required
parameter is given; and each parameter's value has the parameter's type once its templates are rendered.
Templates are rendered for the trial machines of provision.recipes.templates (every fact unknown; every fact
known): a value is a problem when it has the wrong type on every trial it renders for, so a template whose
type depends on the machine (``{{ serial or 5 }}`` for an int) is left to the machine, which then waits with
the reason, and ``{{ ram_mb }}`` for an int passes although it renders ``None`` where RAM is unknown. A value
without templates is checked as it is. Every problem is FILE:LINE: key: message in the recipe file.
"""

from __future__ import annotations

from typing import Any

from provision import yamlsrc
from provision.errors import Problem
from provision.hooks import Catalog, Header, ParamProblem
from provision.recipes import templates
from provision.recipes.schema import Recipe


def _known(catalog: Catalog) -> str:
    names = catalog.names
    return f"known: {', '.join(names)}" if names else "the catalog is empty"


def _type_problem(header: Header, name: str, value: Any, budget: templates.Budget) -> str | None:
    """Why ``value`` cannot be parameter ``name``, or None when it can (on some trial machine at least)."""
    param = header.params[name]
    if not templates.has_template(value):
        try:
            param.convert(value)
        except ParamProblem as exc:
            return f"{exc} (parameter of type {param.type.value})"
        return None
    reasons = []
    for rendered in templates.trial_renders(value, budget):
        try:
            param.convert(rendered)
            return None
        except ParamProblem as exc:
            reasons.append(str(exc))
    if not reasons:
        return None  # renders on no trial machine: it depends on the machine's facts
    return f"{reasons[-1]} once rendered for the trial machines (parameter of type {param.type.value})"


def check_hooks(recipe: Recipe, doc: yamlsrc.Located, catalog: Catalog) -> tuple[tuple[Header, ...], list[Problem]]:
    """The header of each of ``recipe``'s hooks (in order), and the problems found (then the headers are
    incomplete and must not be used)."""
    file = doc.file
    problems: list[Problem] = []
    headers: list[Header] = []
    budget = templates.Budget()  # one file's trial renders, apart from the template checks' own budget
    for i, hook in enumerate(recipe.hooks):
        at: tuple[str | int, ...] = ("hooks", i)
        found = catalog.get(hook.name)
        if found is None:
            message = f"unknown hook {hook.name!r} ({_known(catalog)})"
            problems.append(Problem(file, doc.line_of((*at, "name")), f"hooks[{i}].name", message))
            continue
        header = found.header
        headers.append(header)
        takes = ", ".join(header.params) or "none"
        for name, value in hook.params.items():
            key = (*at, "params", name)
            if name not in header.params:
                message = f"hook {hook.name!r} takes no parameter {name!r} (it takes: {takes})"
                problems.append(Problem(file, doc.line_of(key), yamlsrc.dotted(key), message))
                continue
            reason = _type_problem(header, name, value, budget)
            if reason is not None:
                problems.append(Problem(file, doc.line_of(key), yamlsrc.dotted(key), reason))
        for name, param in header.params.items():
            if param.required and name not in hook.params:
                message = f"hook {hook.name!r} requires parameter {name!r}: {param.description or param.type.value}"
                problems.append(Problem(file, doc.line_of((*at, "params")), f"hooks[{i}].params", message))
    return tuple(headers), problems
