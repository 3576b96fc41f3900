"""Unit tests of configuration loading (config.py) and of config/scheduler.toml."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import attrs
import pytest

from trio_scheduler.config import (
    RELATIONS_ADVISED,
    RELATIONS_REQUIRED,
    Config,
    ConfigError,
    config_from_mapping,
    config_warnings,
    load_config,
    with_overrides,
)

SCHEDULER_TOML = Path(__file__).resolve().parent.parent / "config" / "scheduler.toml"

# ---------------------------------------------------------------------------------------
# Defaults equal the PROTOCOL defaults


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("server.port", 5010),
        ("server.max_message_bytes", 2 * 1024 * 1024),
        ("nodes.heartbeat_interval_s", 15),
        ("nodes.heartbeat_timeout_s", 45),
        ("nodes.default_max_concurrent_jobs", 4),
        ("nodes.require_gpu", True),
        ("nodes.resource_threshold_percent", 95),
        ("nodes.required_services", ["asr", "nmt", "tts"]),
        ("segmentation.pause_ms", 3000),
        ("segmentation.max_duration_ms", 10000),
        ("segmentation.max_buffer_bytes", 512000),
        ("segmentation.padding_auto_ms", 220),
        ("segmentation.padding_manual_ms", 280),
        ("jobs.timeout_ms", 30000),
        ("jobs.pending_timeout_ms", 10000),
        ("jobs.max_attempts", 3),
        ("sessions.close_drain_ms", 5000),
        ("sessions.idle_timeout_s", 120),
        ("results.gap_timeout_ms", 5000),
        ("results.max_pending", 200),
        ("store.redis_url", None),
    ],
)
def test_defaults_match_protocol(path, expected):
    section, key = path.split(".")
    assert getattr(getattr(Config(), section), key) == expected


def test_heartbeat_timeout_is_three_intervals():
    nodes = Config().nodes
    assert nodes.heartbeat_timeout_s == 3 * nodes.heartbeat_interval_s


def test_load_config_none_gives_defaults():
    assert load_config(None) == Config()


# ---------------------------------------------------------------------------------------
# Loading TOML


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scheduler.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_partial_file_overrides_only_its_keys(tmp_path):
    config = load_config(
        write(
            tmp_path,
            """
            [server]
            port = 6000
            [nodes]
            heartbeat_interval_s = 10      # int accepted for a float
            required_services = ["asr"]
            require_gpu = false
            [store]
            redis_url = "redis://localhost:6380/0"
            [logging]
            format = "json"
            """,
        )
    )
    assert config == with_overrides(
        Config(),
        server={"port": 6000},
        nodes={"heartbeat_interval_s": 10.0, "required_services": ["asr"], "require_gpu": False},
        store={"redis_url": "redis://localhost:6380/0"},
        logging={"format": "json"},
    )
    assert isinstance(config.nodes.heartbeat_interval_s, float)


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://10.0.0.5:7000", "redis+cluster://10.0.0.5:7000/0",
     "rediss+cluster://user:secret@redis.internal:7000"],
)
def test_a_redis_cluster_is_named_by_its_url_scheme(tmp_path, url):
    config = load_config(write(tmp_path, f'[store]\nredis_url = "{url}"\n'))
    assert config.store.redis_url == url


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        pytest.param("[server]\nprot = 5010\n", ["prot", "server"], id="typo-key"),
        pytest.param("[sever]\nport = 5010\n", ["sever"], id="typo-section"),
        pytest.param("[segmentation]\npause_msec = 3000\n", ["pause_msec", "segmentation"],
                     id="typo-key-2"),
        pytest.param("[server]\nport = \"5010\"\n", ["server.port"], id="str-for-int"),
        pytest.param("[server]\nport = 5010.0\n", ["server.port"], id="float-for-int"),
        pytest.param("[server]\nhost = 0\n", ["server.host"], id="int-for-str"),
        pytest.param("[nodes]\nrequire_gpu = 1\n", ["nodes.require_gpu"], id="int-for-bool"),
        pytest.param("[nodes]\nrequire_gpu = \"yes\"\n", ["nodes.require_gpu"],
                     id="str-for-bool"),
        pytest.param("[jobs]\ntimeout_ms = true\n", ["jobs.timeout_ms"], id="bool-for-int"),
        pytest.param("[nodes]\nheartbeat_interval_s = true\n", ["nodes.heartbeat_interval_s"],
                     id="bool-for-float"),
        pytest.param("[store]\nredis_url = 6379\n", ["store.redis_url"], id="int-for-optional"),
        pytest.param("[store]\nredis_url = \"\"\n", ["redis_url", "store"], id="empty-redis-url"),
        pytest.param("[store]\nredis_url = \"localhost:6379\"\n", ["redis_url"],
                     id="redis-url-without-scheme"),
        pytest.param("[store]\nredis_url = \"redis+cluster://h:7000/1\"\n",
                     ["redis_url", "database 0"], id="cluster-database-not-0"),
        pytest.param("[store]\nredis_url = \"rediss+cluster://h:7000?db=2\"\n",
                     ["redis_url", "database 0"], id="cluster-db-query-not-0"),
        pytest.param("[store]\nkey_prefix = \"ts:{a}:\"\n", ["key_prefix", "braces"],
                     id="hash-tag-in-prefix"),
        pytest.param("[server]\nport = -1\n", ["port", "server"], id="negative-port"),
        pytest.param("[server]\nport = 70000\n", ["port", "server"], id="port-too-big"),
        pytest.param("[segmentation]\npause_ms = -5\n", ["pause_ms", "segmentation"],
                     id="negative-pause"),
        pytest.param("[nodes]\nheartbeat_interval_s = 0\n", ["heartbeat_interval_s", "nodes"],
                     id="zero-interval"),
        pytest.param("[segmentation]\npadding_auto_ms = -1\n", ["padding_auto_ms"],
                     id="negative-padding"),
        pytest.param("[jobs]\nmax_attempts = 0\n", ["max_attempts", "jobs"], id="zero-attempts"),
        pytest.param("[results]\nmax_pending = -200\n", ["max_pending", "results"],
                     id="negative-max-pending"),
        pytest.param("[logging]\nlevel = \"verbose\"\n", ["level", "logging"], id="bad-choice"),
        pytest.param("server = 5\n", ["server"], id="section-not-table"),
        pytest.param("[workers]\nrestart_delay_s = 10.0\nmax_restart_delay_s = 5.0\n",
                     ["max_restart_delay_s (5)", "restart_delay_s (10)"],
                     id="restart-delay-above-its-cap"),
    ],
)
def test_bad_values_name_the_key(tmp_path, toml, names):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml))
    message = str(info.value)
    for name in names:
        assert name in message


def test_every_bad_key_is_reported(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[jobs]\nmax_attempts = 0\n[results]\nmax_pending = 0\n"))
    assert "max_attempts" in str(info.value)
    assert "max_pending" in str(info.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\nport = 1\n"))


@pytest.mark.parametrize(
    "toml",
    ['[nodes]\nrequired_services = "asr"\n', "[nodes]\nrequired_services = {asr = 1}\n"],
    ids=["string", "table"],
)
def test_list_key_with_wrong_type_is_rejected(tmp_path, toml):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml))
    assert "required_services" in str(info.value)


def test_bad_choice_message_is_readable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[logging]\nlevel = "verbose"\n'))
    assert "Attribute(" not in str(info.value)


def test_config_from_mapping_matches_load(tmp_path):
    assert config_from_mapping({"results": {"max_pending": 5}}) == with_overrides(
        Config(), results={"max_pending": 5}
    )


def test_with_overrides_keeps_other_keys():
    config = with_overrides(Config(), server={"port": 0}, jobs={"timeout_ms": 1000})
    assert config.server.port == 0
    assert config.server.host == Config().server.host
    assert config.jobs.timeout_ms == 1000
    assert config.jobs.max_attempts == 3
    assert config.nodes == Config().nodes


def test_with_overrides_validates():
    with pytest.raises(ValueError):
        with_overrides(Config(), server={"port": -1})


# ---------------------------------------------------------------------------------------
# config/scheduler.toml documents every key with its default


def section_classes() -> dict[str, type]:
    defaults = Config()
    return {field.name: type(getattr(defaults, field.name)) for field in attrs.fields(Config)}


def test_every_section_is_an_attrs_class():
    sections = section_classes()
    assert set(sections) == {
        "server", "store", "nodes", "segmentation", "jobs", "sessions", "results", "admin",
        "metrics", "cluster", "workers", "trace",
        "logging",
    }
    for section, cls in sections.items():
        assert attrs.has(cls), section


@pytest.fixture
def scheduler_toml() -> tuple[str, dict]:
    if not SCHEDULER_TOML.exists():
        pytest.skip(f"{SCHEDULER_TOML} does not exist yet")
    text = SCHEDULER_TOML.read_text(encoding="utf-8")
    return text, tomllib.loads(text)


def test_scheduler_toml_lists_every_key(scheduler_toml):
    text, data = scheduler_toml
    missing = []
    for section, cls in section_classes().items():
        table = data.get(section, {})
        for field in attrs.fields(cls):
            if field.name in table:
                continue
            # A key whose default is None cannot be written in TOML: it must appear commented.
            commented = re.search(rf"^\s*#\s*{re.escape(field.name)}\s*=", text, re.MULTILINE)
            default = field.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
            if default is None and commented:
                continue
            missing.append(f"{section}.{field.name}")
    assert missing == [], f"keys not documented in {SCHEDULER_TOML}"


def test_scheduler_toml_has_no_unknown_sections(scheduler_toml):
    _, data = scheduler_toml
    assert set(data) <= set(section_classes())


def test_scheduler_toml_loads_to_defaults(scheduler_toml):
    assert load_config(SCHEDULER_TOML) == Config()


# ---------------------------------------------------------------------------------------
# Relations between settings


@pytest.mark.parametrize(
    ("breaking", "holding", "names"),
    [
        pytest.param({"nodes": {"heartbeat_timeout_s": 15.0}},
                     {"nodes": {"heartbeat_timeout_s": 15.5}},
                     ["heartbeat_timeout_s (15)", "heartbeat_interval_s (15)"], id="heartbeat"),
        pytest.param({"segmentation": {"hangover_auto_ms": 3000}},
                     {"segmentation": {"hangover_auto_ms": 2999}},
                     ["hangover_auto_ms (3000)", "pause_ms (3000)"], id="hangover-auto"),
        pytest.param({"segmentation": {"pause_ms": 200}},
                     {"segmentation": {"pause_ms": 201}},
                     ["hangover_manual_ms (200)", "pause_ms (200)"], id="hangover-manual"),
        pytest.param({"segmentation": {"min_utterance_ms": 10000}},
                     {"segmentation": {"min_utterance_ms": 9999}},
                     ["min_utterance_ms (10000)", "max_duration_ms (10000)"], id="min-utterance"),
        pytest.param({"nodes": {"default_max_concurrent_jobs": 257}},
                     {"nodes": {"default_max_concurrent_jobs": 256}},
                     ["default_max_concurrent_jobs (257)", "max_concurrent_jobs_limit (256)"],
                     id="default-capacity"),
        pytest.param({"server": {"max_message_bytes": 87384}},
                     {"server": {"max_message_bytes": 87385}},
                     ["max_chunk_bytes (65536, as base64 87384)", "max_message_bytes (87384)"],
                     id="chunk-in-frame"),
    ],
)
def test_contradictory_settings_are_errors(tmp_path, breaking, holding, names):
    def toml(sections: dict) -> str:
        return "".join(f"[{section}]\n" + "".join(f"{k} = {v!r}\n" for k, v in keys.items())
                       for section, keys in sections.items())

    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml(breaking)))
    for name in names:
        assert name in str(info.value)
    load_config(write(tmp_path, toml(holding)))  # just on the right side: accepted


def test_every_relation_is_tested():
    """One case above per required relation: a new one needs its own."""
    assert len(RELATIONS_REQUIRED) == 6 and len(RELATIONS_ADVISED) == 3


def test_every_broken_relation_is_reported():
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"nodes": {"heartbeat_timeout_s": 1.0},
                             "segmentation": {"min_utterance_ms": 20000}})
    assert "heartbeat_timeout_s" in str(info.value) and "min_utterance_ms" in str(info.value)


@pytest.mark.parametrize(
    ("sections", "advice"),
    [
        ({"nodes": {"heartbeat_timeout_s": 29.0}}, "one late heartbeat takes a node offline"),
        ({"jobs": {"pending_timeout_ms": 30001}}, "jobs.pending_timeout_ms (30001) is longer"),
        ({"server": {"overload_lag_ms": 99}}, "loop_lag_interval_s (0.1) is longer than "
                                              "server.overload_lag_ms (99)"),
    ],
)
def test_doubtful_settings_are_warnings(sections, advice):
    config = config_from_mapping(sections)  # accepted
    [warning] = config_warnings(config)
    assert advice in warning
    assert config_warnings(with_overrides(Config(), nodes={"heartbeat_timeout_s": 30.0})) == []


def test_defaults_break_no_relation():
    assert config_warnings(Config()) == []
