"""Configuration: one frozen attrs class per TOML section, loaded with cattrs.

Every limit the server enforces lives here under a name, with the default the protocol
contract gives. ``config/scheduler.toml`` documents each key; a test keeps the two in step.
An unknown or mistyped key stops start-up with a message naming the key, so a typo never
silently leaves a default in force.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import cattrs

from trio_scheduler.logs import LEVELS
from trio_scheduler.protocol.bounds import DecodeLimits
from trio_scheduler.store.urls import cluster_url_problem
from trio_scheduler.strict import install_strict_hooks


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


def _redis_url(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    """No URL means the embedded store; an empty or scheme-less one is a mistake, not that."""
    if value is None:
        return
    if not value.startswith(REDIS_SCHEMES):
        raise ValueError(
            f"{attribute.name} must start with {', '.join(REDIS_SCHEMES)} (or be left out "
            f"for the embedded store), got {value!r}"
        )
    problem = cluster_url_problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name}: {problem}")


def _key_prefix(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    """Braces would make the prefix a Redis Cluster hash tag: every key in one slot."""
    if "{" in value or "}" in value:
        raise ValueError(f"{attribute.name} must not contain braces, got {value!r}")


def _port(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be a TCP port (0-65535), got {value!r}")


@attrs.frozen
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = attrs.field(default=5010, validator=_port)
    max_message_bytes: int = attrs.field(default=2 * 1024 * 1024, validator=_positive)
    handshake_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    max_request_head_bytes: int = attrs.field(default=16384, validator=_positive)
    shutdown_grace_s: float = attrs.field(default=5.0, validator=_non_negative)
    drain_grace_s: float = attrs.field(default=20.0, validator=_non_negative)
    send_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    max_connections: int = attrs.field(default=10000, validator=_positive)
    max_json_depth: int = attrs.field(default=32, validator=_positive)
    reuse_port: bool = False
    max_text_chars: int = attrs.field(default=10_000, validator=_positive)
    max_object_bytes: int = attrs.field(default=16_384, validator=_positive)
    max_list_items: int = attrs.field(default=256, validator=_positive)
    overload_lag_ms: int = attrs.field(default=200, validator=_positive)
    overload_cpu_percent: float = attrs.field(default=90.0, validator=_positive)
    overload_recover_s: float = attrs.field(default=2.0, validator=_non_negative)
    overload_retry_after_s: int = attrs.field(default=5, validator=_positive)
    max_session_starts_per_s: float = attrs.field(default=50.0, validator=_positive)
    receive_buffer_bytes: int = attrs.field(default=65536, validator=_positive)
    accept_burst: int = attrs.field(default=64, validator=_positive)

    @functools.cached_property
    def decode_limits(self) -> DecodeLimits:
        """The bounds every inbound frame is decoded with (one object, so one converter)."""
        return DecodeLimits(
            max_depth=self.max_json_depth,
            max_message_bytes=self.max_message_bytes,
            max_text_chars=self.max_text_chars,
            max_object_bytes=self.max_object_bytes,
            max_list_items=self.max_list_items,
        )


@attrs.frozen
class StoreConfig:
    redis_url: str | None = attrs.field(default=None, validator=_redis_url)
    key_prefix: str = attrs.field(default="ts:", validator=_key_prefix)
    socket_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    call_timeout_ms: int = attrs.field(default=500, validator=_positive)
    startup_wait_s: float = attrs.field(default=10.0, validator=_positive)


NodeTokens = list[str] | dict[str, list[str]]


def _structure_node_tokens(converter: cattrs.Converter):
    tokens, table = list[str], dict[str, list[str]]

    def structure(value: Any, _: type) -> Any:
        if isinstance(value, dict):
            return converter.structure(value, table)
        return converter.structure(value, tokens)

    return structure


@attrs.frozen
class NodesConfig:
    heartbeat_interval_s: float = attrs.field(default=15.0, validator=_positive)
    heartbeat_timeout_s: float = attrs.field(default=45.0, validator=_positive)
    default_max_concurrent_jobs: int = attrs.field(default=4, validator=_positive)
    require_gpu: bool = True
    resource_threshold_percent: float = attrs.field(default=95.0, validator=_positive)
    required_services: list[str] = attrs.Factory(lambda: ["asr", "nmt", "tts"])
    max_gpu_queue: int = attrs.field(default=16, validator=_non_negative)
    pairing_code_ttl_s: float = attrs.field(default=600.0, validator=_positive)
    # A list (any holder is any node) or a table: token -> node ids it may claim ("x-*": prefix).
    auth_tokens: NodeTokens = attrs.Factory(list)
    register_timeout_s: float = attrs.field(default=30.0, validator=_positive)
    max_languages: int = attrs.field(default=64, validator=_positive)
    max_concurrent_jobs_limit: int = attrs.field(default=256, validator=_positive)
    outbound_queue_size: int = attrs.field(default=256, validator=_positive)
    outbound_queue_bytes: int = attrs.field(default=32 * 1024 * 1024, validator=_positive)
    receive_queue_frames: int = attrs.field(default=32, validator=_positive)
    max_partial_chars: int = attrs.field(default=2000, validator=_positive)
    max_partials_per_s: float = attrs.field(default=50.0, validator=_positive)


@attrs.frozen
class SegmentationConfig:
    pause_ms: int = attrs.field(default=3000, validator=_positive)
    max_duration_ms: int = attrs.field(default=10000, validator=_positive)
    max_buffer_bytes: int = attrs.field(default=512000, validator=_positive)
    padding_auto_ms: int = attrs.field(default=220, validator=_non_negative)
    padding_manual_ms: int = attrs.field(default=280, validator=_non_negative)
    hangover_auto_ms: int = attrs.field(default=150, validator=_non_negative)
    hangover_manual_ms: int = attrs.field(default=200, validator=_non_negative)
    min_utterance_ms: int = attrs.field(default=200, validator=_non_negative)
    min_voiced_ms: int = attrs.field(default=100, validator=_non_negative)
    silent_packet_max_bytes: int = attrs.field(default=10, validator=_non_negative)
    max_playback_suspend_ms: int = attrs.field(default=30000, validator=_non_negative)


@attrs.frozen
class JobsConfig:
    timeout_ms: int = attrs.field(default=30000, validator=_positive)
    pending_timeout_ms: int = attrs.field(default=10000, validator=_positive)
    max_attempts: int = attrs.field(default=3, validator=_positive)
    reservation_margin_ms: int = attrs.field(default=5000, validator=_non_negative)
    max_waiting_per_pool: int = attrs.field(default=1000, validator=_positive)
    dedup_window_ms: int = attrs.field(default=30000, validator=_non_negative)
    no_node_wait_ms: int = attrs.field(default=8000, validator=_non_negative)
    backpressure_pause_ms: int = attrs.field(default=1000, validator=_positive)


@attrs.frozen
class SessionsConfig:
    inbox_size: int = attrs.field(default=64, validator=_positive)
    inbox_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    node_inbox_size: int = attrs.field(default=1024, validator=_positive)
    receive_queue_frames: int = attrs.field(default=4, validator=_positive)
    events_per_turn: int = attrs.field(default=16, validator=_positive)
    close_drain_ms: int = attrs.field(default=5000, validator=_non_negative)
    idle_timeout_s: float = attrs.field(default=120.0, validator=_positive)
    max_messages_per_s: float = attrs.field(default=50.0, validator=_positive)
    group_window_ms: int = attrs.field(default=2000, validator=_non_negative)
    group_max_parts: int = attrs.field(default=8, validator=_positive)
    max_chunk_bytes: int = attrs.field(default=65536, validator=_positive)
    max_index_ahead: int = attrs.field(default=200, validator=_positive)
    max_waiting_utterance_bytes: int = attrs.field(
        default=32 * 1024 * 1024, validator=_positive
    )
    allowed_origins: list[str] = attrs.Factory(list)
    auth_tokens: list[str] = attrs.Factory(list)


@attrs.frozen
class ResultsConfig:
    gap_timeout_ms: int = attrs.field(default=5000, validator=_positive)
    max_pending: int = attrs.field(default=200, validator=_positive)


@attrs.frozen
class TraceConfig:
    path: str | None = None
    audio: str = attrs.field(default="redact", validator=attrs.validators.in_(("redact", "full")))
    queue_size: int = attrs.field(default=100_000, validator=_positive)


@attrs.frozen
class AdminConfig:
    token: str | None = None


@attrs.frozen
class MetricsConfig:
    token: str | None = None
    loop_lag_interval_s: float = attrs.field(default=0.1, validator=_positive)
    recent_latency_samples: int = attrs.field(default=1000, validator=_positive)


@attrs.frozen
class ClusterConfig:
    """Several instances sharing one Redis (only with ``[store] redis_url``)."""

    instance_heartbeat_s: float = attrs.field(default=1.0, validator=_positive)
    instance_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    inbox_max_len: int = attrs.field(default=100_000, validator=_positive)
    wait_retry_ms: int = attrs.field(default=200, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.instance_timeout_s < 2 * self.instance_heartbeat_s:
            raise ValueError(
                "instance_timeout_s must be at least twice instance_heartbeat_s "
                f"(got {self.instance_timeout_s:g} and {self.instance_heartbeat_s:g}): an "
                "instance would be taken for dead between two of its heartbeats"
            )


@attrs.frozen
class WorkersConfig:
    """How the parent of ``serve --workers N`` restarts a worker that exited."""

    restart_delay_s: float = attrs.field(default=0.5, validator=_non_negative)
    max_restart_delay_s: float = attrs.field(default=30.0, validator=_non_negative)
    stable_after_s: float = attrs.field(default=60.0, validator=_positive)
    max_early_exits: int = attrs.field(default=5, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.max_restart_delay_s < self.restart_delay_s:
            raise ValueError(
                f"max_restart_delay_s ({self.max_restart_delay_s:g}) must not be shorter "
                f"than restart_delay_s ({self.restart_delay_s:g}): the wait before a "
                "restart only grows"
            )


@attrs.frozen
class LoggingConfig:
    format: str = attrs.field(
        default="console", validator=attrs.validators.in_(("console", "json"))
    )
    level: str = attrs.field(default="info", validator=attrs.validators.in_(LEVELS))


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    nodes: NodesConfig = NodesConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    jobs: JobsConfig = JobsConfig()
    sessions: SessionsConfig = SessionsConfig()
    results: ResultsConfig = ResultsConfig()
    admin: AdminConfig = AdminConfig()
    metrics: MetricsConfig = MetricsConfig()
    cluster: ClusterConfig = ClusterConfig()
    workers: WorkersConfig = WorkersConfig()
    trace: TraceConfig = TraceConfig()
    logging: LoggingConfig = LoggingConfig()


def _strict_converter() -> cattrs.Converter:
    """A converter that refuses coercions: ``port = "80"`` is an error, not 80."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    install_strict_hooks(converter)
    converter.register_structure_hook_func(
        lambda t: t == NodeTokens, _structure_node_tokens(converter)
    )
    return converter


_CONVERTER = _strict_converter()


def _describe(exc: BaseException, expected: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, ValueError) and len(exc.args) > 1:
        return str(exc.args[0])  # attrs' in_() validator packs extra args
    return str(exc) or type(exc).__name__


def config_from_mapping(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from parsed TOML, naming the first bad key on error."""
    try:
        config = _CONVERTER.structure(data, Config)
    except cattrs.ClassValidationError as exc:
        problems = cattrs.transform_error(exc, path="config", format_exception=_describe)
        raise ConfigError("; ".join(problems)) from None
    except (TypeError, ValueError) as exc:  # attrs validators raise these
        raise ConfigError(str(exc)) from None
    check_relations(config)
    return config


# ---------------------------------------------------------------------------------------
# Relations between settings. Each key is valid alone; together some cannot work (an
# error) or very likely are a slip (a warning). Messages name both keys, their values and
# what would happen.


@attrs.frozen
class Relation:
    holds: Callable[[Config], bool]
    message: str  # formatted with the config as ``c``


def _base64_length(size: int) -> int:
    return 4 * math.ceil(size / 3)


RELATIONS_REQUIRED = (
    Relation(
        lambda c: c.nodes.heartbeat_timeout_s > c.nodes.heartbeat_interval_s,
        "nodes.heartbeat_timeout_s ({c.nodes.heartbeat_timeout_s:g}) must be longer than "
        "nodes.heartbeat_interval_s ({c.nodes.heartbeat_interval_s:g}): a node "
        "heartbeating on time would be taken offline",
    ),
    Relation(
        lambda c: c.segmentation.hangover_auto_ms < c.segmentation.pause_ms,
        "segmentation.hangover_auto_ms ({c.segmentation.hangover_auto_ms}) must be shorter "
        "than segmentation.pause_ms ({c.segmentation.pause_ms}): an utterance would wait "
        "longer to be sent than the silence that ended it",
    ),
    Relation(
        lambda c: c.segmentation.hangover_manual_ms < c.segmentation.pause_ms,
        "segmentation.hangover_manual_ms ({c.segmentation.hangover_manual_ms}) must be "
        "shorter than segmentation.pause_ms ({c.segmentation.pause_ms}): an utterance "
        "would wait longer to be sent than a silence that ends one",
    ),
    Relation(
        lambda c: c.segmentation.min_utterance_ms < c.segmentation.max_duration_ms,
        "segmentation.min_utterance_ms ({c.segmentation.min_utterance_ms}) must be shorter "
        "than segmentation.max_duration_ms ({c.segmentation.max_duration_ms}): every "
        "utterance would be dropped as too short",
    ),
    Relation(
        lambda c: c.nodes.default_max_concurrent_jobs <= c.nodes.max_concurrent_jobs_limit,
        "nodes.default_max_concurrent_jobs ({c.nodes.default_max_concurrent_jobs}) must not "
        "exceed nodes.max_concurrent_jobs_limit ({c.nodes.max_concurrent_jobs_limit}): a "
        "node that declares nothing would get more jobs than a node may declare",
    ),
    Relation(
        lambda c: _base64_length(c.sessions.max_chunk_bytes) < c.server.max_message_bytes,
        "sessions.max_chunk_bytes ({c.sessions.max_chunk_bytes}, as base64 "
        "{base64_chunk}) must fit in server.max_message_bytes "
        "({c.server.max_message_bytes}): the socket would be closed (1009) before the "
        "chunk limit could answer",
    ),
)

RELATIONS_ADVISED = (
    Relation(
        lambda c: c.nodes.heartbeat_timeout_s >= 2 * c.nodes.heartbeat_interval_s,
        "nodes.heartbeat_timeout_s ({c.nodes.heartbeat_timeout_s:g}) is less than two "
        "nodes.heartbeat_interval_s ({c.nodes.heartbeat_interval_s:g}): one late heartbeat "
        "takes a node offline",
    ),
    Relation(
        lambda c: c.jobs.pending_timeout_ms <= c.jobs.timeout_ms,
        "jobs.pending_timeout_ms ({c.jobs.pending_timeout_ms}) is longer than "
        "jobs.timeout_ms ({c.jobs.timeout_ms}): a job may wait for a free node longer than "
        "a node is given to run it",
    ),
    Relation(
        lambda c: c.metrics.loop_lag_interval_s * 1000 <= c.server.overload_lag_ms,
        "metrics.loop_lag_interval_s ({c.metrics.loop_lag_interval_s:g}) is longer than "
        "server.overload_lag_ms ({c.server.overload_lag_ms}): the lag probe wakes too "
        "rarely to notice an overload in time",
    ),
)


def _broken(config: Config, relations: tuple[Relation, ...]) -> list[str]:
    base64_chunk = _base64_length(config.sessions.max_chunk_bytes)
    return [
        relation.message.format(c=config, base64_chunk=base64_chunk)
        for relation in relations
        if not relation.holds(config)
    ]


def check_relations(config: Config) -> None:
    """Raise :class:`ConfigError` naming every required relation the config breaks."""
    problems = _broken(config, RELATIONS_REQUIRED)
    if problems:
        raise ConfigError("; ".join(problems))


def config_warnings(config: Config) -> list[str]:
    """Advised relations the config breaks: it works, but probably not as meant."""
    return _broken(config, RELATIONS_ADVISED)


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return config_from_mapping(data)


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """Return ``config`` with some keys replaced, e.g. ``server={"port": 0}``."""
    changes = {
        name: attrs.evolve(getattr(config, name), **values) for name, values in sections.items()
    }
    return attrs.evolve(config, **changes)
