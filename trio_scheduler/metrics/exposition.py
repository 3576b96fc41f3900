"""The text exposition of a registry, with labels that tell instances apart.

Several instances behind one store are scraped as separate targets, but their series
meet in dashboards and recording rules: each sample then carries the instance's id
(``scheduler_instance``). Prometheus' own ``instance`` label names the scrape address,
which changes with every pod; the id is what the store and the logs use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Labelled:
    """What ``generate_latest`` needs of a registry: ``collect()``, samples relabelled."""

    def __init__(self, registry: CollectorRegistry, labels: Mapping[str, str]) -> None:
        self._registry = registry
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            relabelled = Metric(family.name, family.documentation, family.type, family.unit)
            relabelled.samples = [
                sample._replace(labels={**sample.labels, **self._labels})
                for sample in family.samples
            ]
            yield relabelled


def render(registry: CollectorRegistry, labels: Mapping[str, str] | None = None) -> bytes:
    return generate_latest(_Labelled(registry, labels) if labels else registry)
