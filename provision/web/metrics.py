"""``GET /metrics``: the Prometheus exposition of the store's figures (``provision.metrics``), one registry per app.

No login, as node_exporter and MAAS's own /metrics: the imaging LAN may already read every machine and run on the
dashboard and the agent API; the figures hold no token, MAC, address or secret (docs/service.md). The store is
read in a worker thread, as every other handler that reads SQLite.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry

from provision.metrics import CONTENT_TYPE, exposition, registry
from provision.store import Store
from provision.wire import paths

REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry", CollectorRegistry)


async def metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(exposition, request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def add_metrics(app: web.Application, store: Store) -> None:
    app[REGISTRY] = registry(store)
    app.router.add_get(paths.METRICS, metrics)
