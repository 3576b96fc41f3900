"""Pure rules of a node's life: validation of a registration, health, status transitions.

Nothing here awaits or reads a clock; the owner task passes in what it knows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import attrs

from trio_scheduler.management.pools import (
    TARGET_SERVICES,
    is_language_tag,
    normalize_language,
    served_pairs,
    served_pools,
)
from trio_scheduler.management.snapshot import NodeStatus
from trio_scheduler.protocol.errors import ErrorCode, echo
from trio_scheduler.protocol.messages import (
    LanguageCapabilities,
    NodeHeartbeat,
    NodeRegister,
    ResourceUsage,
    ServiceCapability,
)

SUPPORTED_CAPABILITY_SCHEMA = "2.0"


@attrs.frozen
class Rejection:
    code: ErrorCode
    message: str
    details: dict | None = None


NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


@attrs.frozen
class NodeLimits:
    max_languages: int = 64
    max_concurrent_jobs: int = 256


def check_languages(
    languages: LanguageCapabilities | None, limits: NodeLimits
) -> Rejection | None:
    """Language lists must be short lists of language tags: a node declaring thousands
    would make its pools (|asr| × |tts| pairs) a cost for everyone."""
    if languages is None:
        return None
    for name in ("asr_languages", "tts_languages", "semantic_languages"):
        values = getattr(languages, name) or []
        field = f"language_capabilities.{name}"
        if len(values) > limits.max_languages:
            return Rejection(
                ErrorCode.INVALID_MESSAGE,
                f"{field} lists more than {limits.max_languages} languages",
                {"field": field},
            )
        for value in values:
            if not is_language_tag(normalize_language(value)):
                return Rejection(
                    ErrorCode.INVALID_MESSAGE,
                    f"{field} has {echo(value)}, not a language tag",
                    {"field": field},
                )
    return None


def check_registration(
    message: NodeRegister, *, require_gpu: bool, limits: NodeLimits = NodeLimits()
) -> Rejection | None:
    """Why a ``node_register`` cannot be accepted, or None (PROTOCOL §3.3)."""
    schema = message.capability_schema_version
    if schema is not None and schema != SUPPORTED_CAPABILITY_SCHEMA:
        return Rejection(
            ErrorCode.INVALID_CAPABILITY_SCHEMA,
            f"capability_schema_version {echo(schema)} is not supported "
            f"(expected {SUPPORTED_CAPABILITY_SCHEMA!r})",
            {"field": "capability_schema_version"},
        )
    if require_gpu and not message.hardware.gpus:
        return Rejection(
            ErrorCode.NO_GPU_AVAILABLE,
            "this scheduler requires a GPU and hardware.gpus is empty",
            {"field": "hardware.gpus"},
        )
    capacity = message.max_concurrent_jobs
    if capacity is not None and not 1 <= capacity <= limits.max_concurrent_jobs:
        return Rejection(
            ErrorCode.INVALID_MESSAGE,
            f"max_concurrent_jobs must be between 1 and {limits.max_concurrent_jobs}",
            {"field": "max_concurrent_jobs"},
        )
    if message.node_id is not None and not NODE_ID.match(message.node_id):
        return Rejection(
            ErrorCode.INVALID_MESSAGE,
            "node_id must be 1-64 letters, digits or ._:- characters",
            {"field": "node_id"},
        )
    return check_languages(message.language_capabilities, limits)


@attrs.frozen
class Capabilities:
    """What a node says it can do, merged from its registration and later heartbeats."""

    services_ready: frozenset[str]
    asr_languages: tuple[str, ...]
    tts_languages: tuple[str, ...]
    semantic_languages: tuple[str, ...]

    @functools.cached_property
    def pairs(self) -> frozenset[str]:
        return served_pairs(self.asr_languages, self.tts_languages, self.semantic_languages)

    @functools.cached_property
    def pools(self) -> frozenset[str]:
        return served_pools(self.asr_languages, self.tts_languages, self.semantic_languages)

    @classmethod
    def from_register(cls, message: NodeRegister) -> Capabilities:
        return cls(frozenset(), (), (), ()).updated(
            message.capability_by_type, message.language_capabilities
        )

    def updated(
        self,
        capability_by_type: Iterable[ServiceCapability] | None,
        languages: LanguageCapabilities | None,
    ) -> Capabilities:
        """Apply a heartbeat's optional fields; absent fields keep what we knew.

        Service entries merge by type: the real agent's heartbeats list only some types
        (often only ``asr``), which must not be read as the others having stopped.
        """
        changes: dict = {}
        if capability_by_type:
            ready = set(self.services_ready)
            for entry in capability_by_type:
                (ready.add if entry.ready else ready.discard)(entry.type)
            if ready != self.services_ready:
                changes["services_ready"] = frozenset(ready)
        if languages is not None:
            for name in ("asr_languages", "tts_languages", "semantic_languages"):
                value = getattr(languages, name)
                if value is not None and tuple(value) != getattr(self, name):
                    changes[name] = tuple(value)
        # Unchanged capabilities keep their identity, and so their cached pairs.
        return attrs.evolve(self, **changes) if changes else self

    def from_heartbeat(self, message: NodeHeartbeat) -> Capabilities:
        return self.updated(message.capability_by_type, message.language_capabilities)


@attrs.frozen
class HealthRules:
    required_services: frozenset[str] = frozenset({"asr", "nmt", "tts"})
    resource_threshold_percent: float = 95.0
    max_gpu_queue: int = 16


def capability_problem(capabilities: Capabilities, rules: HealthRules) -> str | None:
    """Why a node cannot take work whatever its load (None: it can): a required service
    not ready, or no usable language.

    "Usable" follows the required services: when every node must translate or speak
    (NMT or TTS required, the default) it needs a directed pair; when only ASR is
    required, a recognised language is enough (it can take ASR-only jobs).
    """
    if missing := rules.required_services - capabilities.services_ready:
        return f"services not ready: {', '.join(sorted(missing))}"
    pairs_needed = bool(rules.required_services & TARGET_SERVICES)
    if not (capabilities.pairs if pairs_needed else capabilities.pools):
        return "no language pair it can serve" if pairs_needed else "no ASR language"
    return None


def is_capable(capabilities: Capabilities, rules: HealthRules) -> bool:
    return capability_problem(capabilities, rules) is None


def health_problem(
    capabilities: Capabilities, usage: ResourceUsage, rules: HealthRules
) -> str | None:
    """Why a node may not take work (None: it may): not capable (see
    :func:`capability_problem`), or overloaded. The words go into the node's status log
    line."""
    if problem := capability_problem(capabilities, rules):
        return problem
    if usage.gpu_queue_length is not None and usage.gpu_queue_length > rules.max_gpu_queue:
        return f"gpu_queue_length {usage.gpu_queue_length} > {rules.max_gpu_queue}"
    limit = rules.resource_threshold_percent
    for name in ("cpu_percent", "mem_percent", "gpu_percent"):
        load = getattr(usage, name)
        if load is not None and load > limit:
            return f"{name} {load:g} > {limit:g}"
    return None


def is_healthy(capabilities: Capabilities, usage: ResourceUsage, rules: HealthRules) -> bool:
    """A node may take work: required services ready, languages usable, not overloaded."""
    return health_problem(capabilities, usage, rules) is None


def status_after_heartbeat(current: NodeStatus, healthy: bool) -> NodeStatus:
    """registering → ready on the first healthy heartbeat; ready ⇄ degraded by health;
    draining and offline are left only by the operator or a new registration."""
    if current in (NodeStatus.DRAINING, NodeStatus.OFFLINE):
        return current
    if healthy:
        return NodeStatus.READY
    if current is NodeStatus.REGISTERING:
        return NodeStatus.REGISTERING
    return NodeStatus.DEGRADED


def status_after_move(standing: NodeStatus, capabilities: Capabilities, rules: HealthRules
                      ) -> NodeStatus:
    """The status of a node that registers here right after leaving another instance, where
    it had ``standing``: it keeps being ready (or draining) if what it registers now is
    capable — its next heartbeat, up to 15 s away, judges its load again."""
    if standing is NodeStatus.DRAINING:
        return NodeStatus.DRAINING
    if standing is NodeStatus.READY and is_capable(capabilities, rules):
        return NodeStatus.READY
    return NodeStatus.REGISTERING


def status_after_undrain(
    capabilities: Capabilities, usage: ResourceUsage | None, rules: HealthRules
) -> NodeStatus:
    """Where an operator's undrain puts a draining node: what its last heartbeat's health
    says (ready or degraded), or registering if it never reported its load."""
    if usage is None:
        return NodeStatus.REGISTERING
    return NodeStatus.READY if is_healthy(capabilities, usage, rules) else NodeStatus.DEGRADED
