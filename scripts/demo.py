"""Everything in one process: a scheduler, two simulated GPU nodes, one simulated browser.

    python scripts/demo.py [--port 0] [--utterances 3] [--log-level warning]
                           [--dashboard-screenshot docs/dashboard.png]

Starts ``trio_scheduler.server.serve`` on 127.0.0.1 (``--port 0``: a free port), two
FakeNodes (zh/en/ja, capacity 2, service times 0.3 s and 0.5 s) and one FakeClient
(two_way_auto zh/en), prints every event, then one row per round trip, stops everything
and exits 0 (1 if some utterance got no translation_result). With
``--dashboard-screenshot``, Debian's headless chromium (driven by playwright, from the
test tools) photographs ``/dashboard`` while the browser session runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys

import trio

from trio_scheduler.config import Config, with_overrides
from trio_scheduler.logs import configure_logging
from trio_scheduler.server import serve
from trio_scheduler.simulate.client import ClientSummary, FakeClient, describe_client_event
from trio_scheduler.simulate.node import FakeNode, describe_node_event
from trio_scheduler.simulate.script import reachability_explained

LANGUAGES = ["zh", "en", "ja"]
NODE_DELAYS_S = (0.3, 0.5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="scheduler port (0: a free one)")
    parser.add_argument("--utterances", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=4, help="256 ms chunks per utterance")
    parser.add_argument("--log-level", default="warning",
                        choices=("debug", "info", "warning", "error"), help="server log level")
    parser.add_argument("--dashboard-screenshot", metavar="PNG",
                        help="save a screenshot of /dashboard taken during the run")
    return parser


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def screenshot_dashboard(url: str, path: str) -> None:
    """Once the page shows end-to-end latencies, let its chart fill a little and shoot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(url)
            page.wait_for_function(
                "document.getElementById('e2e').textContent.trim().startsWith('–') === false",
                timeout=30_000,
            )
            page.wait_for_timeout(4000)
            page.screenshot(path=path, full_page=True)
        finally:
            browser.close()


class Clock:
    """Prints event lines stamped with ms since the demo started."""

    def __init__(self) -> None:
        self.t0 = trio.current_time()

    def line(self, who: str, text: str) -> None:
        print(f"{(trio.current_time() - self.t0) * 1000:7.0f} ms  {who:<15} {text}", flush=True)


def fmt(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_table(summary: ClientSummary, served_by: dict[str, str]) -> None:
    header = (f"{'utt':>3}  {'node':<20}  {'final→result':>12}  {'dispatch→result':>15}  "
              f"{'service asr/nmt/tts/total':<25}  {'network web→s/s→node/node→s/s→web':<33}  text")
    print()
    print(header)
    print("-" * len(header))
    for record in summary.utterances:
        result = record.result
        if result is None:
            reason = record.missing["reason"] if record.missing else "no outcome"
            print(f"{record.index:>3}  {'-':<20}  missing: {reason}")
            continue
        service = result.get("service_timings") or {}
        network = result.get("network_timings") or {}
        service_s = "/".join(fmt(service.get(k)) for k in ("asr_ms", "nmt_ms", "tts_ms",
                                                            "total_ms"))
        network_s = "/".join(fmt(network.get(k)) for k in (
            "web_to_scheduler_ms", "scheduler_to_node_ms", "node_to_scheduler_ms",
            "scheduler_to_web_ms"))
        print(f"{record.index:>3}  {served_by.get(result['job_id'], '?'):<20}  "
              f"{fmt(record.latency_ms) + ' ms':>12}  "
              f"{fmt(record.dispatch_to_result_ms) + ' ms':>15}  {service_s:<25}  "
              f"{network_s:<33}  {result['text_asr']} → {result['text_translated']}")
    print("(all times in ms; final→result = is_final sent → translation_result received, "
          "dispatch→result = ui_event DISPATCHED → translation_result, both at the client)")


async def demo(args: argparse.Namespace) -> int:
    clock = Clock()
    config = with_overrides(Config(), server={"host": "127.0.0.1", "port": args.port})
    async with trio.open_nursery() as server_nursery:
        scheduler = await server_nursery.start(serve, config)
        base = f"ws://127.0.0.1:{scheduler.port}"
        clock.line("scheduler", f"listening on {base} (embedded store)")

        nodes: list[FakeNode] = []
        async with trio.open_nursery() as peers:
            for number, delay in enumerate(NODE_DELAYS_S, start=1):
                name = f"node{number} ({delay}s)"

                def show(kind, frame, name=name):
                    clock.line(name, describe_node_event(kind, frame))

                node = FakeNode(f"{base}/ws/node", languages=LANGUAGES, max_concurrent_jobs=2,
                                service_time_s=delay, on_event=show)
                await peers.start(node.run)
                nodes.append(node)

            def all_ready(snapshot) -> bool:
                views = [snapshot.nodes.get(n.node_id) for n in nodes]
                return all(v is not None and v.schedulable for v in views)

            with trio.fail_after(10):
                await scheduler.publisher.wait_until(all_ready)
            clock.line("scheduler", "both nodes ready")

            client = FakeClient(
                f"{base}/ws/session", two_way=("zh", "en"), utterances=args.utterances,
                utterance_chunks=args.chunks, result_timeout_s=15,
                on_event=lambda kind, frame: clock.line(
                    "client", describe_client_event(kind, frame)),
            )
            async with trio.open_nursery() as camera:
                if args.dashboard_screenshot:
                    url = f"http://127.0.0.1:{scheduler.port}/dashboard"
                    camera.start_soon(trio.to_thread.run_sync, screenshot_dashboard, url,
                                      args.dashboard_screenshot)
                summary = await client.run()
            peers.cancel_scope.cancel()  # the nodes disconnect

        # Stop the scheduler only once it has let the nodes go: cancelling serve() while a
        # node is still connected hangs (the node's shielded cleanup waits for a reply from
        # the already-cancelled management owner; see the report of this script).
        with trio.fail_after(10):
            await scheduler.publisher.wait_until(
                lambda snapshot: not any(n.node_id in snapshot.nodes for n in nodes))
        clock.line("scheduler", "nodes gone; stopping")
        server_nursery.cancel_scope.cancel()

    served_by = {job["job_id"]: f"{node.node_id} ({delay}s)"
                 for node, delay in zip(nodes, NODE_DELAYS_S) for job in node.jobs}
    print_table(summary, served_by)
    for node in nodes:
        print(f"{node.node_id}: {len(node.jobs)} job(s), max {node.max_in_flight} in flight")
    return 0 if len(summary.results) == len(summary.utterances) == args.utterances else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("console", args.log_level)
    with reachability_explained("demo"):
        return trio.run(demo, args)


if __name__ == "__main__":
    sys.exit(main())
