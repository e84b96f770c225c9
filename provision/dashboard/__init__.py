"""The workshop's dashboard (docs/dashboard.md): the rack view, machine and image pages, live updates by
Server-Sent Events, in French and English. Read-only; the forms that act need a login (``provision.web``).
"""

from provision.dashboard.routes import add_dashboard

__all__ = ["add_dashboard"]
