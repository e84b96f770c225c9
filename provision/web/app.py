"""The aiohttp application: every route of ``provision serve`` (``provision.wire.paths``), the middlewares
every request goes through, and where each route's handler lives (boot scripts, agent API, images, files,
/metrics).
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from provision.boot import Booter
from provision.bundles.repo import KEY_ASC
from provision.credentials import load_or_create_key
from provision.dashboard import add_dashboard
from provision.dashboard.downloads import Issuer
from provision.hooks import Catalog, default_folders, load_catalog
from provision.images import ImageStore
from provision.multicast import Multicast
from provision.postinstall import PostInstall
from provision.runs import Runs
from provision.web import api, boot
from provision.web.actions import setup_actions
from provision.web.errors import provision_errors, quiet_malformed_http
from provision.web.images import add_image_routes
from provision.web.logs import log_context
from provision.web.metrics import add_metrics
from provision.wire import paths
from provision.wire.api import MAX_BODY

log = logging.getLogger(__name__)

BOOTER = boot.BOOTER
REPO = "/repo/"  # the bundles' repository (docs/bundles.md); the bundle hook derives it from provision.server=


async def _close(postinstall: PostInstall, multicast: Multicast | None) -> None:
    postinstall.close()
    if multicast is not None:
        multicast.close()


def make_app(booter: Booter, images: ImageStore | None = None) -> web.Application:
    quiet_malformed_http()
    app = web.Application(
        middlewares=[log_context, provision_errors, boot.grub_abortive_close], client_max_size=MAX_BODY
    )
    app[boot.BOOTER] = booter
    app[api.STORE] = booter.store
    state = booter.config.state_dir
    key = load_or_create_key(state / "secrets" / "server.key")
    hooks = booter.config.hooks
    folders = default_folders(hooks.dir)

    def catalog() -> Catalog:
        return load_catalog(folders)

    postinstall = PostInstall(booter.store, catalog, booter.config.ssh_key_path, state_dir=state,
                              repo_key=booter.config.repo_path / KEY_ASC,
                              port=hooks.ssh_port, workers=hooks.workers)  # fmt: skip
    config = booter.config
    multicast = None if images is None else Multicast(images, config.multicast, address=str(config.address),
                                                      device=config.interface)  # fmt: skip
    app[api.RUNS] = Runs(
        booter.store, images, booter.config.recipes_dir, state / "probes", key=key, address_check=booter.address_is,
        postinstall=postinstall, catalog=catalog, erasure_operator=booter.config.erasure.operator,
        token_ttl=booter.config.boot.token_ttl_seconds, multicast=multicast,
    )  # fmt: skip
    app.on_cleanup.append(lambda _app: _close(postinstall, multicast))
    app.router.add_get(paths.HEALTHZ, boot.healthz)
    add_metrics(app, booter.store)
    app.router.add_get(paths.BOOT_IPXE, boot.ipxe_script)
    app.router.add_get(paths.BOOT_GRUB_MAIN, boot.grub_main)
    app.router.add_get(paths.BOOT_GRUB_HOST, boot.grub_host)
    app.router.add_post(paths.HELLO, api.hello)
    app.router.add_post(paths.FIRSTBOOT, api.firstboot)
    app.router.add_get(paths.MACHINES, api.machines)
    app.router.add_get(paths.MACHINE_EVENTS, api.machine_events)
    app.router.add_post(paths.RUN_PROGRESS, api.run_progress)
    app.router.add_post(paths.RUN_REPORT, api.run_report)
    app.router.add_post(paths.RUN_ERASURE, api.run_erasure)
    app.router.add_post(paths.RUN_MULTICAST, api.run_multicast)
    app.router.add_post(paths.RUN_ERASURE_PROGRESS, api.run_erasure_progress)
    app.router.add_post(paths.RUN_CAPTURE_OFFER, api.run_capture_offer)
    app.router.add_put(paths.RUN_CAPTURE_CHUNK, api.run_capture_chunk)
    app.router.add_post(paths.RUN_CAPTURE_DONE, api.run_capture_done)
    app.router.add_get(paths.RUNS, api.list_runs)
    app.router.add_get(paths.RUN, api.get_run)
    app.router.add_get(paths.OPENAPI, api.openapi)
    if images is not None:
        add_image_routes(app, images)
    issuer = Issuer(booter.config.certificates_key_path, booter.config.certificates.workshop)
    add_dashboard(app, booter.store, images, recipes=app[api.RUNS].recipes, probes_dir=state / "probes",
                  session_hours=booter.config.dashboard.session_hours, issuer=issuer)  # fmt: skip
    setup_actions(app, booter.config.auth, postinstall)
    root = booter.config.boot_root
    if root.is_dir():
        # aiohttp resolves the path and refuses anything outside root; symlinks are not followed.
        app.router.add_static(paths.FILES, root, follow_symlinks=False, show_index=False)
    else:
        log.warning("boot root %s does not exist: /files/ is not served", root)
    _serve_repo(app, booter.config.repo_path)
    return app


def _serve_repo(app: web.Application, repo: Path) -> None:
    """The bundles' Debian repository (provision bundles sync) at /repo/, as /files/ is: confined to its folder,
    no symlink followed, no listing. The folder is made when missing, so a sync after start is served."""
    try:
        repo.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("bundle repository %s cannot be made (%s): /repo/ is not served", repo, exc.strerror or exc)
        return
    app.router.add_static(REPO, repo, follow_symlinks=False, show_index=False)
