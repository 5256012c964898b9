"""The web chat page of `rxt-edge serve` in a real headless browser: Playwright driving Debian's chromium.

Skipped, saying why, without the playwright package or a chromium binary (Debian: apt-get install chromium)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("starlette", reason="the [serve] extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")

from rxt_edge.apps.serve.app import ServeOptions, create_app  # noqa: E402
from rxt_edge.apps.serve.store import SQLiteStore  # noqa: E402
from test_serve import MODEL, LiveServer, session  # noqa: E402,F401  (the module-scoped session fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_server(session, tmp_path_factory):  # noqa: F811
    store = SQLiteStore(str(tmp_path_factory.mktemp("page") / "s.sqlite3"), session.package.fingerprint)
    server = LiveServer(create_app(session, store, ServeOptions(MODEL)))
    yield server
    server.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install -y chromium)")
def test_page_streams_remembers_reloads_and_starts_over(page_server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_server.url + "/")
            sync_api.expect(page.locator("#model")).to_have_text(MODEL)

            def ask(text: str) -> str:
                n = page.locator(".assistant").count()
                page.fill("#text", text)
                page.click("#send")
                sync_api.expect(page.locator("#send")).to_be_enabled(timeout=30_000)
                assert page.locator(".assistant").count() == n + 1
                return page.locator(".assistant").last.inner_text()

            assert ask("I live in Paris.")
            page.reload()  # the transcript and the conversation survive a reload
            sync_api.expect(page.locator(".user")).to_have_count(1)
            assert "Paris" in ask("Where do I live?")
            page.click("#new")
            sync_api.expect(page.locator(".msg")).to_have_count(0)
            assert "Paris" not in ask("Where do I live?")  # a new conversation has a fresh memory
            assert errors == [] and page.locator("#status").inner_text() == ""
        finally:
            browser.close()
