"""Prometheus metrics: one registry per scheduler, families listed in docs/metrics.md."""
