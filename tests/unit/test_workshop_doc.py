"""docs/workshop.md quotes the dashboard's and the log's words exactly: every backticked quote in a column named
"provision's words" must still exist in provision's code (a string literal, docstrings left out), its boot and
page templates, or its gettext catalogues (msgid or msgstr), so the guide cannot drift from what the agent sees.

A quote's ``...`` stands for a value: the pieces between them must appear in that order within one literal,
template or message.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tests.support.paths import REPO

GUIDE = REPO / "docs" / "workshop.md"
COLUMN = "provision's words"
HOLE = "..."


def _cells(row: str) -> list[str]:
    """The cells of a Markdown table row (``\\|`` is a bar inside a cell)."""
    inner = row.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def checked_quotes(markdown: str) -> list[tuple[int, str]]:
    """(line number, quote) of every backticked quote in a COLUMN of a table of ``markdown``."""
    found: list[tuple[int, str]] = []
    column: int | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        if not line.lstrip().startswith("|"):
            column = None
            continue
        cells = _cells(line)
        if COLUMN in cells:
            column = cells.index(COLUMN)
        elif column is not None and column < len(cells) and not set(cells[column]) <= set("-: "):
            found.extend((number, quote) for quote in re.findall(r"`([^`]+)`", cells[column]))
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def python_strings(source: str) -> Iterator[str]:
    """The string literals of ``source``, docstrings left out; an f-string with its fields as ``{}``."""
    tree = ast.parse(source)
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    skip = _docstrings(tree) | inside_fstrings
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value


def catalogue_strings(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        catalogue = read_po(handle)
    for message in catalogue:
        for text in (message.id, message.string):
            values = text if isinstance(text, tuple | list) else (text,)
            yield from (v for v in values if v)


@cache
def corpus() -> tuple[str, ...]:
    """Every text a quote may come from."""
    texts: list[str] = []
    for path in sorted((REPO / "provision").rglob("*.py")):
        texts.extend(python_strings(path.read_text(encoding="utf-8")))
    for pattern in ("pxe/*.j2", "provision/dashboard/templates/*.html"):
        texts.extend(p.read_text(encoding="utf-8") for p in sorted(REPO.glob(pattern)))
    for path in sorted((REPO / "provision" / "dashboard" / "locale").rglob("*.po")):
        texts.extend(catalogue_strings(path))
    return tuple(texts)


def appears(quote: str, texts: Iterable[str]) -> bool:
    """Whether the pieces of ``quote`` between its ``...`` appear in this order within one of ``texts``."""
    pieces = [p for p in quote.split(HOLE) if p]
    if not pieces:
        return False
    for text in texts:
        at = 0
        for piece in pieces:
            at = text.find(piece, at)
            if at < 0:
                break
            at += len(piece)
        else:
            return True
    return False


def test_every_quoted_message_still_exists() -> None:
    quotes = checked_quotes(GUIDE.read_text(encoding="utf-8"))
    assert len(quotes) >= 40, f"only {len(quotes)} quotes found in the {COLUMN!r} column: the table changed shape?"
    missing = [f"docs/workshop.md:{line}: `{quote}`" for line, quote in quotes if not appears(quote, corpus())]
    assert not missing, "quoted in the guide, found nowhere in the code or catalogues:\n" + "\n".join(missing)


def test_the_check_finds_a_quote_that_drifted() -> None:
    guide = (
        f"| symptom | {COLUMN} | what to do |\n|---|---|---|\n"
        "| x | `no disk found for the image`, `a wording nobody wrote` | y |\n"
    )
    quotes = checked_quotes(guide)
    assert [q for _, q in quotes] == ["no disk found for the image", "a wording nobody wrote"]
    assert [appears(q, corpus()) for _, q in quotes] == [True, False]


def test_only_the_words_column_of_its_table_is_checked() -> None:
    guide = (
        f"| symptom | {COLUMN} |\n|---|---|\n| `PXE-E51 firmware words` | `ours` |\n\nprose `not checked`\n\n"
        "| other | table |\n|---|---|\n| `a` | `b` |\n"
    )
    assert checked_quotes(guide) == [(3, "ours")]


@pytest.mark.parametrize(
    ("quote", "texts", "found"),
    [
        ("...: no free address in ...: no offer", ["%s: no free address in %s..%s: no offer"], True),
        ("...: no offer ... no free address in", ["%s: no free address in %s..%s: no offer"], False),  # order
        ("no offer", ["no", "offer"], False),  # within one text
        ("...", ["anything"], False),
    ],
)
def test_pieces_in_order_within_one_text(quote: str, texts: list[str], found: bool) -> None:
    assert appears(quote, texts) is found


def test_fstrings_keep_their_text_and_docstrings_are_left_out() -> None:
    source = (
        '"""module doc: superseded by run X"""\n'
        'def f(run_id):\n    """doc"""\n    return f"superseded by run {run_id}"\n'
    )
    assert list(python_strings(source)) == ["superseded by run {}"]
