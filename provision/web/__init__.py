"""HTTP: boot scripts, boot files, the agent API and (later) the dashboard, on aiohttp.

aiohttp rather than a WSGI/ASGI pair: one dependency gives routing, an asyncio server that keeps many agents'
long transfers cheap, and FileResponse over sendfile(2) for zero-copy boot files and image chunks.
"""

from provision.web.app import make_app

__all__ = ["make_app"]
