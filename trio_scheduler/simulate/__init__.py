"""Simulated peers — a GPU node agent and a browser client — for tests, scripts and
benchmarks. They speak the wire protocol exactly as the real programs do."""
