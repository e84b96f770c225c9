"""The PC's own screen: what its dashboard tile shows, drawn in large type on the live environment's console,
so a worker at the rack finds the PC of a red tile and the tile of a PC.

The screen shows the tile number in big block digits (a 5x7 font of ``█``, scaled up on a larger console), the
stage as a symbol and a word (the dashboard's French words: ``STAGE_WORDS`` must stay identical to its
catalogue, a unit test compares them), a progress bar with percent while writing and verifying, and for a
failed, repaired or waiting PC the reason in one plain sentence and what to do. The server gives the tile
number, its stage and the reason's words in its answers (``provision.wire.api.Screen``); the agent adds what
it knows itself (its own stage and progress, a reason when the server cannot be reached). A state is never
told by colour alone: the symbol and the word say it too; colour is added with ANSI codes.

Text from outside (the server's words, a recorded reason) is cleaned before it is drawn: escape sequences and
control characters removed, typography the console font lacks replaced (the Linux console's built-in font
holds code page 437: ``é`` and ``█`` yes, a curly apostrophe no), then wrapped and cut to the lines it may take.

``Console`` draws on a terminal device, ``/dev/tty1`` in the live environment (the screen of the PC: never
the serial console, whose log the lab and the tests read), and never fails the run: a console that cannot be
opened or written is logged once and left alone; a write that would block (the screen paused with Ctrl-S) is
skipped. Each drawing replaces the whole screen.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import textwrap
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.wire.api import Screen

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/dev/tty1")
WIDTH, HEIGHT = 80, 25  # the console's size when it cannot be asked (a VGA text console)
MAX_SCALE = 4

# the dashboard's words for its stages, in its default language (provision/dashboard/locale/fr: msgids
# booting, inventory, waiting, erasing, capturing, writing, verifying, finishing, done, failed, repair)
STAGE_WORDS: dict[str, str] = {
    "booting": "démarrage",
    "inventory": "inventaire",
    "waiting": "en attente",
    "erasing": "effacement",
    "capturing": "capture",
    "writing": "écriture",
    "verifying": "vérification",
    "hooks": "finitions",
    "done": "terminé",
    "failed": "échec",
    "repair": "réparation",
}
TILE_WORD = "Case"  # msgid "Tile"
CALL_IT = "appelez l\u2019informaticien"  # msgid "call the IT agent": a reason the server did not put in words
# symbols the console font has (code page 437), never colour alone
STAGE_SYMBOLS: dict[str, str] = {
    "booting": "►",
    "inventory": "≡",
    "waiting": "║",
    "erasing": "▒",
    "capturing": "↑",
    "writing": "↓",
    "verifying": "↕",
    "hooks": "☼",
    "done": "√",
    "failed": "X",
    "repair": "▲",
}
# ANSI colours of the stage line, chosen on the Linux console's VGA palette for WCAG AA contrast (seen on a
# QEMU VGA screendump, tests/e2e/test_pc_screen.py): black on green 6.7:1, bright white on red 7.7:1, black on
# light grey 9:1 (the console's "bold black" is dark grey and its yellow background is brown: 1.5:1, unreadable)
STAGE_COLOURS: dict[str, str] = {"done": "22;30;42", "failed": "1;37;41", "repair": "22;30;47", "waiting": "22;30;47"}
PROGRESS_STAGES = ("erasing", "capturing", "writing", "verifying")

# 5x7 block digits: each row of a glyph is 5 pixels, "#" is lit
FONT: dict[str, tuple[str, ...]] = {
    "0": (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "# #  ", "  #  ", "  #  ", "  #  ", "#####"),
    "2": (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    "3": (" ### ", "#   #", "    #", "  ## ", "    #", "#   #", " ### "),
    "4": ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    "6": ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    "8": (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    "9": (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
    "?": (" ### ", "#   #", "    #", "   # ", "  #  ", "     ", "  #  "),
}
GLYPH_W, GLYPH_H = 5, 7
BLOCK = "█"

# typography the console font lacks, said with what it has
_TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u00a0": " ", "\u202f": " ", "\u2009": " ",
    "\u2192": "->", "\u00d7": "x",
})  # fmt: skip
# escape sequences: CSI (ESC [ or the C1 CSI), OSC/DCS/APC... up to their end, any other ESC + one character
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\s\S]?"
)


def clean(text: str, limit: int = 600) -> str:
    """``text`` as the console can show it, on one line: escape sequences and control characters removed,
    typography the console font lacks replaced, any character outside code page 437 shown as ``?``,
    whitespace runs made one space, at most ``limit`` characters."""
    text = _ESCAPES.sub("", text[: limit * 4])
    kept = []
    for char in text.translate(_TYPOGRAPHY):
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char)[0] in "CZ":  # controls, format marks, separators, unassigned
            continue
        else:
            kept.append(char if _printable(char) else "?")
    said = " ".join("".join(kept).split())
    return said if len(said) <= limit else said[: limit - 3].rstrip() + "..."


def _printable(char: str) -> bool:
    try:
        char.encode("cp437")
    except UnicodeEncodeError:
        return False
    return True


def wrap(text: str, width: int, lines: int) -> list[str]:
    """``text`` (cleaned) in at most ``lines`` lines of ``width``; cut with ``...`` when it is longer."""
    if width < 4 or lines < 1:
        return []
    found = textwrap.wrap(clean(text), width, break_long_words=True, break_on_hyphens=False)
    if len(found) > lines:
        found = found[:lines]
        found[-1] = found[-1][: width - 3].rstrip() + "..."
    return found


def big_number(text: str, scale: int = 1) -> list[str]:
    """``text`` (digits, ``?``) in block digits: 7 x ``scale`` rows, each pixel ``2 x scale`` characters wide
    (console cells are about twice as tall as wide), glyphs ``2 x scale`` apart."""
    pixel, gap = BLOCK * 2 * scale, " " * 2 * scale
    rows: list[str] = []
    for row in range(GLYPH_H):
        line = gap.join(
            "".join(pixel if lit == "#" else " " * len(pixel) for lit in FONT.get(c, FONT["?"])[row]) for c in text
        )
        rows.extend([line.rstrip()] * scale)
    return rows


def big_width(digits: int, scale: int = 1) -> int:
    return digits * GLYPH_W * 2 * scale + max(digits - 1, 0) * 2 * scale


@dataclass(frozen=True)
class View:
    """What the screen shows: the tile's number (None: not known yet), the stage (a dashboard stage name) and,
    for a stage the agent has no word of, the server's word; progress in percent; a reason and an action."""

    tile: int | None = None
    stage: str = "booting"
    word: str | None = None
    percent: int | None = None
    reason: str | None = None
    action: str | None = None
    mac: str = ""
    at: float | None = None  # when it was drawn (the clock line at the bottom)

    @property
    def stage_word(self) -> str:
        return STAGE_WORDS.get(self.stage) or clean(self.word or self.stage, 40)

    @property
    def symbol(self) -> str:
        return STAGE_SYMBOLS.get(self.stage, "►")

    def merged(self, screen: Screen | None) -> View:
        """This view with what the server's ``screen`` says (its tile number, stage and reason)."""
        if screen is None:
            return self
        changes: dict[str, Any] = {}
        if screen.tile is not None:
            changes["tile"] = screen.tile
        if screen.stage:
            changes.update(stage=screen.stage, word=screen.word)
            if screen.stage not in PROGRESS_STAGES:
                changes["percent"] = 100 if screen.stage == "done" else None
            changes.update(reason=screen.reason, action=screen.action)
        return dataclasses.replace(self, **changes)


def layout(view: View, width: int = WIDTH, height: int = HEIGHT) -> list[tuple[str, str]]:
    """The screen's lines with their role (``head``, ``digits``, ``stage``, ``bar``, ``reason``, ``action``,
    ``clock``, ``""``): at most ``height`` lines of at most ``width`` characters."""
    width, height = max(width, 30), max(height, 16)
    inner = width - 4
    number = str(view.tile) if view.tile is not None else "?"
    head, mac = f"{TILE_WORD} {number}", clean(view.mac, 17)
    out = [("head", f"  {head}" + " " * max(1, inner - len(head) - len(mac)) + mac), ("", "")]
    rest = 16  # the lines under the digits: stage, progress, reason and action, the clock
    scale = 1
    while scale < MAX_SCALE and big_width(len(number), scale + 1) <= inner and GLYPH_H * (scale + 1) + rest <= height:
        scale += 1
    if big_width(len(number), scale) <= inner:
        pad = " " * ((width - big_width(len(number), scale)) // 2)
        out += [("digits", pad + row if row else "") for row in big_number(number, scale)]
    else:  # a number too long for block digits: said in text
        out.append(("digits", f"  {head}"))
    out += [("", ""), ("stage", f"  {view.symbol}  {view.stage_word}"), ("", "")]
    if view.percent is not None:
        percent = max(0, min(100, view.percent))
        label = f" {percent:3d} %"
        bar = inner - len(label) - 2
        filled = bar * percent // 100
        out += [("bar", f"  [{BLOCK * filled}{'░' * (bar - filled)}]{label}"), ("", "")]
    room = height - len(out) - 2
    if view.reason and room > 0:
        said = wrap(view.reason, inner, min(4, room))
        out += [("reason", f"  {line}") for line in said]
        room -= len(said)
    if view.action and room > 0:
        said = wrap(view.action, inner - 3, min(3, room))
        out += [("action", f"  -> {line}" if i == 0 else f"     {line}") for i, line in enumerate(said)]
    out = out[: height - 1]
    if view.at is not None:
        clock = time.strftime("%H:%M:%S", time.localtime(view.at))
        out += [("", "")] * (height - 1 - len(out)) + [("clock", " " * (width - len(clock) - 2) + clock)]
    return [(role, line[:width].rstrip()) for role, line in out]


def lines(view: View, width: int = WIDTH, height: int = HEIGHT) -> list[str]:
    """The screen as plain text (``layout`` without the roles)."""
    return [line for _, line in layout(view, width, height)]


def paint(view: View, width: int = WIDTH, height: int = HEIGHT) -> str:
    """The screen with the terminal codes that draw it: blanking off, screen cleared, the digits bright, the
    stage line coloured (its symbol and word say the same), reason and action bright; the cursor left on the
    line under the last text, so what the live environment writes on its console afterwards (its markers, a
    rescue shell's prompt) goes below the text instead of scrolling the tile number away."""
    painted, last = [], 0
    for row, (role, line) in enumerate(layout(view, width, height)):
        if role == "stage" and view.stage in STAGE_COLOURS:
            line = f"\x1b[{STAGE_COLOURS[view.stage]}m{line.ljust(max(width, 30) - 1)}\x1b[0m"
        elif role in ("digits", "stage", "reason", "action"):
            line = f"\x1b[1m{line}\x1b[0m"
        if role and role != "clock":
            last = row
        painted.append(line)
    # ESC [9;0] (Linux console): never blank the screen; ESC [H ESC [2J: clear; ESC [row;1H: the cursor
    return "\x1b[9;0]\x1b[0m\x1b[H\x1b[2J" + "\r\n".join(painted) + f"\x1b[{last + 3};1H"


class Console:
    """Draws the ``View`` on a terminal device (``path``; None: nowhere). Thread-safe: the writer's progress
    arrives from its worker threads. Never raises."""

    def __init__(
        self,
        path: Path | None = DEFAULT_PATH,
        *,
        mac: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.view = View(mac=mac)
        self.clock = clock
        self.drawn = 0  # drawings that reached the device
        self._lock = threading.Lock()
        self._warned = False

    def show(self, **changes: Any) -> None:
        """Change what the screen shows (``View``'s fields) and draw it again."""
        with self._lock:
            self.view = dataclasses.replace(self.view, **changes)
            self._draw()

    def server(self, screen: Screen | None) -> None:
        """What the server's answer says about this PC's tile, drawn."""
        if screen is None:
            return
        with self._lock:
            self.view = self.view.merged(screen)
            self._draw()

    def number(self, screen: Screen | None) -> None:
        """Only the tile number of the server's ``screen`` (a progress answer: the agent knows its own stage
        and progress better than the server's newest record of them)."""
        if screen is None or screen.tile is None or screen.tile == self.view.tile:
            return
        with self._lock:
            self.view = dataclasses.replace(self.view, tile=screen.tile)
            self._draw()

    def progress(self, stage: str, done: int, total: int) -> None:
        """A progress report of the write (``writing``), the read-back (``verifying``) or a capture's read of the
        disk (``capturing``)."""
        percent = 100 if total <= 0 else max(0, min(100, done * 100 // total))
        with self._lock:
            keep = self.view.stage == stage
            self.view = dataclasses.replace(
                self.view,
                stage=stage,
                percent=percent,
                word=self.view.word if keep else None,
                reason=self.view.reason if keep else None,
                action=self.view.action if keep else None,
            )
            self._draw()

    def failed(self, reason: str | None, screen: Screen | None = None) -> None:
        """The end of a failed run: the server's words for it when it gave them, else the recorded reason
        (as it is) with "call the IT agent"."""
        with self._lock:
            view = dataclasses.replace(self.view, stage="failed", word=None, percent=None)
            merged = view.merged(screen)
            if merged.stage != "failed" or not merged.reason:
                merged = dataclasses.replace(
                    view, tile=merged.tile, reason=reason or None, action=CALL_IT if reason else None
                )
            self.view = merged
            self._draw()

    def _draw(self) -> None:
        if self.path is None:
            return
        try:
            self._write(dataclasses.replace(self.view, at=self.clock()))
        except Exception as exc:  # the screen never fails the run
            if not self._warned:
                self._warned = True
                log.warning("the screen %s cannot be drawn on (%s); the run goes on without it", self.path, exc)

    def _write(self, view: View) -> None:
        assert self.path is not None
        flags = os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        if self.path.is_file():
            flags |= os.O_TRUNC  # a file standing in for the console (tests): the newest drawing only
        fd = os.open(self.path, flags)  # never created: a console that is missing is not drawn on
        try:
            try:
                size = os.get_terminal_size(fd)
                width, height = size.columns or WIDTH, size.lines or HEIGHT
            except OSError:
                width, height = WIDTH, HEIGHT
            data = paint(view, min(width, 300), min(height, 120)).encode("utf-8")
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except BlockingIOError:
                return  # the screen is paused (Ctrl-S): this drawing is skipped, the next one replaces it
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
                return
            self.drawn += 1
        finally:
            os.close(fd)
