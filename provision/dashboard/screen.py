"""The PC's own screen: what a machine's tile shows, as the wire's ``Screen`` the agent API's answers carry
(hello, progress, report), so the live environment's console shows the same tile number, stage and reason
(``provision.agent.screen`` draws it; docs/dashboard.md, "The PC's own screen").

The tile is the dashboard's (``Views.tile_of``: the same session numbering, the same stage, the same first
reason); its words are rendered here in the server's default dashboard language (French), the one the
workshop reads. A tile that cannot be made (a bug, a probe that does not read) gives no screen, never a
failed API call: the agent then shows what it knows itself.
"""

from __future__ import annotations

import logging

from provision.dashboard.i18n import DEFAULT, translations
from provision.dashboard.views import Tile, Views
from provision.wire.api import Screen

log = logging.getLogger(__name__)


def screen_of_tile(tile: Tile, lang: str = DEFAULT) -> Screen:
    """The tile as the PC's screen shows it, its words in ``lang``."""
    tr = translations(lang)
    reason = action = None
    if tile.reason is not None:
        reason, action = (_cut(text, limit) for text, limit in zip(tile.reason.render(tr.gettext), LIMITS, strict=True))
    return Screen(
        tile=tile.number or None, stage=tile.stage.value, word=_cut(tr.gettext(tile.word), 64), reason=reason,
        action=action,
    )  # fmt: skip


LIMITS = (1000, 500)  # the wire's limits of Screen.reason and Screen.action (a hook's name may be long)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def screen_of(views: Views, mac: str, lang: str = DEFAULT) -> Screen | None:
    """The screen of machine ``mac`` now (None: unknown machine, or its tile could not be made)."""
    try:
        tile = views.tile_of(mac)
        return None if tile is None else screen_of_tile(tile, lang)
    except Exception:  # the dashboard never fails an agent's call
        log.exception("%s: no screen for the agent's answer", mac)
        return None
