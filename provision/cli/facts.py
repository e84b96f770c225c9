"""`provision facts` and `provision recipes check|explain`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import Parser, dump
from provision.cli.hooks import folders, site_catalog
from provision.errors import ConfigError
from provision.facts import Facts, load_facts_json, load_probe
from provision.facts.derive import FACT_DOCS, derive
from provision.hooks import check_folders
from provision.recipes import Decision, check_dir, load_dir, select
from provision.recipes.conditions import show
from provision.resources import data_dir


def default_recipes_dir() -> Path:
    """The sample recipes: recipes/ of the source tree when run from it, else the installed ones."""
    return data_dir("recipes")


def _mac(text: str) -> str:
    mac = text.strip().lower().replace("-", ":")
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac):
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return mac


def _load_facts(source: Path) -> Facts:
    if source.is_file() and source.suffix == ".json":
        return load_facts_json(source)
    return load_probe(source)


def cmd_facts(args: argparse.Namespace, out: TextIO) -> int:
    facts = _load_facts(Path(args.probe))
    derived = derive(facts)
    if args.json:
        dump({"facts": derived, "probe": facts.to_dict()}, out)
        return 0
    width = max(len(d.name) for d in FACT_DOCS)
    out.write(f"# {args.probe}  (read: {', '.join(facts.sources) or 'nothing'})\n")
    for doc in FACT_DOCS:
        out.write(f"{doc.name:<{width}}  {show(derived[doc.name])}\n")
    for warning in facts.warnings:
        out.write(f"warning: {warning}\n")
    return 0


# -------------------------------------------------------------------------------------------- recipes
def cmd_recipes_check(args: argparse.Namespace, out: TextIO) -> int:
    directory = Path(args.dir) if args.dir else default_recipes_dir()
    catalog, problems = check_folders(folders(args.hooks))
    recipes, found = check_dir(directory, catalog)
    problems.extend(found)
    if problems:
        raise ConfigError(problems)
    default = recipes.default.name if recipes.default else "none"
    out.write(f"{directory}: {len(recipes.recipes)} recipes OK (default: {default})\n")
    for rec in sorted(recipes.recipes, key=lambda r: (r.recipe.default, -r.specificity, -r.recipe.priority, r.name)):
        r = rec.recipe
        what = r.image if r.action.value == "image" else r.action.value
        hooks = f"  hooks: {', '.join(h.name for h in r.hooks)}" if r.hooks else ""
        hooks += f"  bundles: {', '.join(r.bundles)}" if r.bundles else ""
        out.write(
            f"  {r.name:<28} {what or '':<12} conditions={rec.specificity} priority={r.priority}"
            f"{'  (default)' if r.default else ''}{hooks}\n"
        )
    if recipes.bundles.bundles:
        known = recipes.bundles
        out.write(f"{known.folder}: {len(known.bundles)} bundles OK (their packages: provision bundles check)\n")
    return 0


def _write_decision(decision: Decision, source: str, out: TextIO) -> None:
    out.write(f"machine:  {source}\n")
    f = decision.facts
    out.write(
        f"          {show(f['vendor'])} / {show(f['model'])} / {show(f['form_factor'])}, "
        f"RAM {show(f['ram_mb'])} MiB, UEFI-capable {show(f['uefi_capable'])}, firmware {show(f['firmware'])}\n"
    )
    name = decision.recipe.name if decision.recipe else "none"
    where = f" ({decision.recipe.file})" if decision.recipe else ""
    out.write(f"decision: {decision.action.value.upper()}  recipe {name}{where}\n")
    if decision.via_default:
        out.write("          no specific recipe matched: the default recipe applies\n")
    for reason in decision.reasons:
        out.write(f"  reason: {reason}\n")
    if decision.chosen and decision.chosen.outcomes:
        out.write("why:\n")
        for outcome in decision.chosen.outcomes:
            out.write(f"  {outcome.describe()}\n")
    if decision.health_checks:
        out.write("health:\n")
        for check in decision.health_checks:
            out.write(f"  {check}\n")
    if decision.plan:
        p = decision.plan
        if p.image is not None:
            out.write(f"plan:     image {p.image}, wipe {p.wipe}, disk {p.target_disk}, hostname {p.hostname}\n")
        if p.erase is not None:  # every drive erased and verified first (alone: an erase-only recipe)
            said = "          erase" if p.image else "plan:     erase only"
            out.write(f"{said} {json.dumps(p.erase, ensure_ascii=False)}\n")
        if p.bundles:
            out.write(f"          bundles {', '.join(p.bundles)} (each a bundle hook, after the recipe's hooks)\n")
        for hook in p.hooks:
            out.write(
                f"          hook {hook['name']} ({hook['where']}, on_failure {hook['on_failure']}, "
                f"timeout {hook['timeout']} s) {json.dumps(hook['params'], ensure_ascii=False)}\n"
            )
    if decision.runners_up:
        out.write("runners-up (also match, ranked lower):\n")
        for cand in decision.runners_up:
            out.write(
                f"  {cand.recipe.name} (conditions={cand.recipe.specificity}, priority={cand.recipe.recipe.priority})\n"
            )
    if decision.rejected:
        out.write("not matching:\n")
        for cand in decision.rejected:
            failed = [o for o in cand.outcomes if not o.matched]
            out.write(f"  {cand.recipe.name}: {failed[0].describe() if failed else ''}\n")


def cmd_recipes_explain(args: argparse.Namespace, out: TextIO) -> int:
    recipes = load_dir(Path(args.recipes) if args.recipes else default_recipes_dir(), site_catalog(args.hooks))
    results = []
    for source in args.probe:
        facts = _load_facts(Path(source))
        if facts.mac is None and args.mac:
            facts = dataclasses.replace(facts, mac=args.mac)
        decision = select(recipes, derive(facts))
        results.append((source, decision))
    if args.json:
        payload = [{"source": s, **d.to_dict()} for s, d in results]
        dump(payload[0] if len(payload) == 1 else payload, out)
    elif args.brief:
        for source, d in results:
            f = d.facts
            name = d.recipe.name if d.recipe else "-"
            out.write(f"{d.action.value:<7} {name:<28} {show(f['vendor'])} {show(f['model'])}  [{source}]\n")
    else:
        for i, (source, decision) in enumerate(results):
            if i:
                out.write("\n")
            _write_decision(decision, source, out)
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "facts",
        help="show the hardware facts read from a probe folder",
        description="Parse a probe folder (dmidecode.txt, lspci.txt, lsblk.json, meminfo, cpuinfo, "
        "smartctl*.json|txt, firmware, mac) and show the facts recipes match on.",
    )
    p.add_argument("probe", metavar="PROBE_DIR", help="folder holding the probe outputs")
    p.add_argument("--json", action="store_true", help="print the derived facts and the full probe as JSON")
    p.set_defaults(func=cmd_facts)

    rec = sub.add_parser("recipes", help="check recipes, explain which recipe a machine gets")
    rsub = rec.add_subparsers(dest="recipes_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)
    p = rsub.add_parser(
        "check",
        help="validate a recipe folder",
        description="Validate every recipe; print FILE:LINE: key: message for each problem and exit 1 if any.",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help="recipe folder (default: recipes/)")
    p.add_argument("--hooks", metavar="DIR", help="a site's hook folder (besides the built-in hooks)")
    p.set_defaults(func=cmd_recipes_check)
    p = rsub.add_parser(
        "explain",
        help="show the recipe chosen for a machine, and why",
        description="Choose the recipe for each machine: the conditions that matched, the health gate, the "
        "rendered plan, and the runners-up.",
    )
    p.add_argument("probe", nargs="+", metavar="PROBE_DIR|FACTS.json", help="probe folder or facts JSON")
    p.add_argument("--recipes", metavar="DIR", help="recipe folder (default: recipes/)")
    p.add_argument("--hooks", metavar="DIR", help="a site's hook folder (besides the built-in hooks)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--brief", action="store_true", help="one line per machine: action, recipe, model")
    p.add_argument(
        "--mac",
        type=_mac,
        help="MAC address to assume for a probe that has none (the server knows it from DHCP)",
    )
    p.set_defaults(func=cmd_recipes_explain)
