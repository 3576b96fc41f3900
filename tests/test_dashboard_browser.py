"""The dashboard in a real headless Chromium: it loads, shows a node that registers while
it is open, and drains that node from the page.

Playwright's sync API runs in a worker thread; the scheduler and the simulated node run in
the test's Trio loop, which the browser thread calls into with ``trio.from_thread``.
Every browser wait has its own timeout, so the thread always ends.
"""

from __future__ import annotations

import shutil
import time

import pytest
import trio

from conftest import RunningServer, make_config
from trio_scheduler.server import serve
from trio_scheduler.simulate.peer import connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOWN_WITHIN_S = 3.0
BROWSER_STEP_MS = 5000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if shutil.which(CHROMIUM) is None:
    pytest.skip("Chromium is not installed (make test installs it with apt)",
                allow_module_level=True)


async def test_dashboard_shows_a_new_node_and_drains_it(nursery):
    config = make_config(admin={"token": "adm"})
    server = RunningServer(await nursery.start(serve, config))
    node_ids: list[str] = []
    node_gone = trio.Event()

    async def run_node(*, task_status):
        async with connect(server.node_url) as node:
            node_id = await server.ready_node(node)
            task_status.started((node, node_id))
            await node_gone.wait()

    async def register_node() -> str:
        node, node_id = await nursery.start(run_node)
        node_ids.append(node_id)
        return node_id

    def browse() -> dict:
        seen = {}
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.set_default_timeout(BROWSER_STEP_MS)
                page.goto(f"http://127.0.0.1:{server.port}/dashboard")
                page.wait_for_selector("#nodes td.empty")  # loaded, polled once: no node
                node_id = trio.from_thread.run(register_node)
                started = time.monotonic()
                row = f"#nodes tr[data-node-id='{node_id}']"
                page.wait_for_selector(f"{row} td.status.ready")
                seen["shown_after_s"] = time.monotonic() - started
                page.fill("#admin-token", "adm")
                page.click(f"{row} button.drain")
                page.wait_for_selector(f"{row} td.status.draining")
                seen["status_after_drain"] = page.inner_text(f"{row} td.status")
                seen["button_after_drain"] = page.inner_text(f"{row} button")
            finally:
                browser.close()
        return seen

    with trio.fail_after(60):
        seen = await trio.to_thread.run_sync(browse)
    [node_id] = node_ids
    assert seen["shown_after_s"] < SHOWN_WITHIN_S
    assert seen["status_after_drain"] == "draining" and seen["button_after_drain"] == "Undrain"
    assert str(server.scheduler.publisher.current.nodes[node_id].status) == "draining"
    node_gone.set()
