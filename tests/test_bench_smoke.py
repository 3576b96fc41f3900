"""``scripts/bench.py --smoke``: the load benchmark runs end to end and reports sanely.

A real ``trio-scheduler serve`` subprocess (embedded store), a node process and a session
process on real sockets, a few seconds of tiny load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def non_negative(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def test_bench_smoke_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=45,  # under the per-test bound
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())

    assert {"machine", "settings", "runs", "comparison", "failures"} <= report.keys()
    assert report["failures"] == []
    assert len(report["runs"]) == 1
    run = report["runs"][0]
    assert run["target"] == "scheduler" and run["store"] == "memory"

    for key in ("sessions", "nodes", "duration_s", "utterances_sent", "utterances_completed",
                "utterances_per_s", "chunks_sent", "server_cpu_s", "server_cpu_percent",
                "server_cpu_s_per_1000_utt", "rss_kib_per_session", "errors",
                "failed_connections"):
        assert non_negative(run[key]), (key, run[key])
    for group in ("latency_ms", "dispatch_ms"):
        for q in ("p50", "p95", "p99", "max", "mean"):
            assert non_negative(run[group][q]), (group, q, run[group])
        assert run[group]["p50"] <= run[group]["p95"] <= run[group]["p99"] <= run[group]["max"]
    for key in ("start", "idle", "connected", "streaming_mean", "streaming_max"):
        assert run["rss_mib"][key] > 0, (key, run["rss_mib"])
    for key in ("sessions_cpu_percent", "nodes_cpu_percent"):
        assert non_negative(run["generator"][key])

    assert run["connected_sessions"] == run["sessions"]
    assert run["utterances_completed"] > 0
    assert run["utterances_completed"] == run["utterances_sent"]
    # dispatch happens before the result comes back
    assert run["dispatch_ms"]["p50"] < run["latency_ms"]["p50"]
    assert run["errors"] == 0, run["error_breakdown"]
    assert run["server_exit_code"] == 0
