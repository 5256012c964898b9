"""`rxt-edge serve`: a stateful, OpenAI-compatible HTTP server whose conversations cost O(1) per turn.

`app.py` (route table + one error wrapper), `pool.py` (live turns, bounded; state committed after the memory
update), `store.py` (`StateStore`: SQLite default, Redis), `responses_api.py`, `chat_api.py`. Needs the
`[serve]` extra (starlette, uvicorn, sse-starlette; redis for `--store redis://`). See docs/serve.md.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import ServeOptions

__all__ = ["ServeOptions", "create_app", "run"]

log = logging.getLogger("rxt_edge.serve")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(
    package_dir: Path,
    options: ServeOptions,
    store_url: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    provider: str = "cpu",
    threads: int | None = None,
    ttl_s: float | None = None,
    max_states: int | None = None,
) -> None:
    """Load the package, open the store, serve until interrupted."""
    import uvicorn

    from rxt_edge.session import RxTSession

    from .app import create_app
    from .store import open_store

    if not _loopback(host) and not options.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach this port can use the model", host)
    session = RxTSession.load(package_dir, provider, threads, max_slots=options.max_concurrent)
    try:
        store = open_store(store_url, session.package.fingerprint, ttl_s, max_states)
        app = create_app(session, store, options)
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    finally:
        session.close()


def __getattr__(name: str):
    """create_app / ServeOptions import starlette: only when used, so a missing extra says so clearly."""
    if name in ("create_app", "ServeOptions"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
