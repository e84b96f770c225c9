"""Mutations of real text inputs for the fuzz tests of the recipe loader and the probe parsers.

``mutate(rng, text, tokens)``: one to five edits of ``text``: insert a token of the format (twice as likely
as any other edit), delete a slice, repeat a slice, put an odd character in, swap two lines, re-indent a
line. ``rng`` is a ``random.Random``, e.g. hypothesis' ``st.randoms()``, so a failure shrinks and replays.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

ODD_CHARACTERS = (0, 9, 10, 13, 32, 34, 35, 38, 39, 42, 45, 58, 91, 93, 123, 125, 0xFEFF, 0xFFFD)


def mutate(rng: random.Random, text: str, tokens: Sequence[str]) -> str:
    buf = text
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        kind = rng.randrange(7)
        pos = rng.randint(0, len(buf))
        end = min(len(buf), pos + rng.choice([1, 2, 5, 20, 200]))
        if kind in (0, 1):
            buf = buf[:pos] + rng.choice(tokens) + buf[pos:]
        elif kind == 2:
            buf = buf[:pos] + buf[end:]
        elif kind == 3:
            buf = buf[:end] + buf[pos:end] * rng.choice([1, 2, 9]) + buf[end:]
        elif kind == 4:
            odd = chr(rng.choice([*ODD_CHARACTERS, rng.randrange(0x250)]))
            buf = buf[:pos] + odd + buf[pos + 1 :]
        else:
            lines = buf.split("\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if kind == 5:
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = rng.choice(["", " ", "  ", "\t", "    "]) + lines[i].lstrip()
            buf = "\n".join(lines)
    return buf
