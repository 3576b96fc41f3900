"""Unit tests of the pure node rules (management/node_state.py), on real agent frames."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from trio_scheduler.management.node_state import (
    Capabilities,
    HealthRules,
    check_registration,
    health_problem,
    is_healthy,
    status_after_heartbeat,
)
from trio_scheduler.management.snapshot import NodeStatus
from trio_scheduler.protocol.codec import decode
from trio_scheduler.protocol.errors import ErrorCode
from trio_scheduler.protocol.messages import (
    NODE_INBOUND,
    NodeHeartbeat,
    NodeRegister,
    ResourceUsage,
)
from trio_scheduler.simulate.frames import heartbeat_frame, register_frame


def register(languages: list[str] | None = None, **overrides: Any) -> NodeRegister:
    message = decode(orjson.dumps(register_frame(languages, **overrides)), NODE_INBOUND)
    assert isinstance(message, NodeRegister)
    return message


def register_with_hardware(**hardware: Any) -> NodeRegister:
    frame = register_frame()
    frame["hardware"].update(hardware)
    for key, value in hardware.items():
        if value is ...:
            del frame["hardware"][key]
    return decode(orjson.dumps(frame), NODE_INBOUND)


def heartbeat(languages: list[str] | None = None, **fields: Any) -> NodeHeartbeat:
    """The agent's heartbeat; ``fields`` replace top-level fields (``...`` deletes one)."""
    frame = heartbeat_frame("node-1DDFF3B5", languages)
    for key, value in fields.items():
        if value is ...:
            frame.pop(key, None)
        else:
            frame[key] = value
    message = decode(orjson.dumps(frame), NODE_INBOUND)
    assert isinstance(message, NodeHeartbeat)
    return message


# ---------------------------------------------------------------------------------------
# check_registration


def test_agent_registration_is_accepted():
    assert check_registration(register(), require_gpu=True) is None


@pytest.mark.parametrize(
    ("schema", "accepted"),
    [
        ("2.0", True),
        (None, True),  # null == absent == "2.0"
        ("1.0", False),
        ("2.1", False),
        ("2", False),
        ("", False),
        ("3.0", False),
    ],
)
def test_capability_schema_version(schema, accepted):
    rejection = check_registration(register(capability_schema_version=schema), require_gpu=True)
    if accepted:
        assert rejection is None
    else:
        assert rejection is not None
        assert rejection.code is ErrorCode.INVALID_CAPABILITY_SCHEMA
        assert rejection.details == {"field": "capability_schema_version"}
        assert repr(schema) in rejection.message


def test_capability_schema_version_absent_field():
    frame = register_frame()
    del frame["capability_schema_version"]
    message = decode(orjson.dumps(frame), NODE_INBOUND)
    assert message.capability_schema_version is None
    assert check_registration(message, require_gpu=True) is None


@pytest.mark.parametrize(
    ("gpus", "require_gpu", "code"),
    [
        pytest.param([{"name": "RTX 4090", "memory_gb": 24}], True, None, id="gpu-required-ok"),
        pytest.param([], True, ErrorCode.NO_GPU_AVAILABLE, id="empty-list"),
        pytest.param(None, True, ErrorCode.NO_GPU_AVAILABLE, id="null"),
        pytest.param(..., True, ErrorCode.NO_GPU_AVAILABLE, id="absent"),
        pytest.param([], False, None, id="empty-list-not-required"),
        pytest.param(None, False, None, id="null-not-required"),
        pytest.param(..., False, None, id="absent-not-required"),
        pytest.param([{"name": "RTX 4090"}], False, None, id="gpu-not-required"),
    ],
)
def test_gpu_requirement(gpus, require_gpu, code):
    rejection = check_registration(register_with_hardware(gpus=gpus), require_gpu=require_gpu)
    if code is None:
        assert rejection is None
    else:
        assert rejection is not None
        assert rejection.code is code
        assert rejection.details == {"field": "hardware.gpus"}


@pytest.mark.parametrize(
    ("max_jobs", "accepted"),
    [(None, True), (1, True), (4, True), (256, True), (0, False), (257, False)],  # < 0: decode
)
def test_max_concurrent_jobs(max_jobs, accepted):
    rejection = check_registration(register(max_concurrent_jobs=max_jobs), require_gpu=True)
    if accepted:
        assert rejection is None
    else:
        assert rejection is not None
        assert rejection.code is ErrorCode.INVALID_MESSAGE
        assert rejection.details == {"field": "max_concurrent_jobs"}


def test_schema_checked_before_gpu():
    frame = register_frame(capability_schema_version="1.0")
    frame["hardware"]["gpus"] = []
    rejection = check_registration(decode(orjson.dumps(frame), NODE_INBOUND), require_gpu=True)
    assert rejection is not None
    assert rejection.code is ErrorCode.INVALID_CAPABILITY_SCHEMA


# ---------------------------------------------------------------------------------------
# Capabilities


def test_capabilities_from_agent_register():
    caps = Capabilities.from_register(register())
    assert caps.services_ready == frozenset({"asr", "nmt", "tts"})
    assert caps.asr_languages == ("zh", "en", "ja")
    assert caps.tts_languages == ("zh", "en", "ja")
    assert caps.semantic_languages == ("zh", "en", "ja")
    langs = ("zh", "en", "ja")
    assert caps.pairs == frozenset(f"{a}:{b}" for a in langs for b in langs)


def test_capabilities_from_register_without_languages():
    caps = Capabilities.from_register(register(language_capabilities=None))
    assert (caps.asr_languages, caps.tts_languages, caps.semantic_languages) == ((), (), ())
    assert caps.pairs == frozenset()


def test_capabilities_from_register_service_not_ready():
    caps = Capabilities.from_register(
        register(
            capability_by_type=[
                {"type": "asr", "ready": True},
                {"type": "nmt", "ready": False, "reason": "loading"},
                {"type": "tts", "ready": True, "ready_impl_ids": ["piper"], "devices": ["gpu"]},
            ]
        )
    )
    assert caps.services_ready == frozenset({"asr", "tts"})


BASE = Capabilities(
    services_ready=frozenset({"asr", "nmt", "tts"}),
    asr_languages=("zh", "en", "ja"),
    tts_languages=("zh", "en", "ja"),
    semantic_languages=("zh", "en", "ja"),
)


@pytest.mark.parametrize(
    ("capability_by_type", "expected_ready"),
    [
        pytest.param(..., {"asr", "nmt", "tts"}, id="field-absent"),
        pytest.param(None, {"asr", "nmt", "tts"}, id="field-null"),
        pytest.param([], {"asr", "nmt", "tts"}, id="empty-list"),
        pytest.param([{"type": "asr", "ready": True}], {"asr", "nmt", "tts"},
                     id="agent-lists-only-asr"),
        pytest.param([{"type": "nmt", "ready": False}], {"asr", "tts"}, id="nmt-stops"),
        pytest.param([{"type": "tone", "ready": True}], {"asr", "nmt", "tts", "tone"},
                     id="new-type-added"),
        pytest.param(
            [{"type": "asr", "ready": False}, {"type": "tts", "ready": False}], {"nmt"},
            id="two-stop",
        ),
        pytest.param(
            [{"type": "asr", "ready": False}, {"type": "asr", "ready": True}],
            {"asr", "nmt", "tts"}, id="last-entry-wins",
        ),
    ],
)
def test_heartbeat_services_merge_by_type(capability_by_type, expected_ready):
    caps = BASE.from_heartbeat(heartbeat(capability_by_type=capability_by_type))
    assert caps.services_ready == frozenset(expected_ready)


@pytest.mark.parametrize(
    ("language_capabilities", "expected"),
    [
        pytest.param(..., (("zh", "en", "ja"),) * 3, id="field-absent"),
        pytest.param(None, (("zh", "en", "ja"),) * 3, id="field-null"),
        pytest.param({}, (("zh", "en", "ja"),) * 3, id="empty-object"),
        pytest.param(
            {"asr_languages": ["zh", "en"], "tts_languages": ["zh", "en"],
             "semantic_languages": ["zh", "en"]},
            (("zh", "en"),) * 3, id="all-replaced",
        ),
        pytest.param(
            {"asr_languages": ["fr"]},
            (("fr",), ("zh", "en", "ja"), ("zh", "en", "ja")), id="only-asr",
        ),
        pytest.param(
            {"asr_languages": None, "tts_languages": ["ko"], "semantic_languages": None},
            (("zh", "en", "ja"), ("ko",), ("zh", "en", "ja")), id="nulls-keep-old",
        ),
        pytest.param(
            {"tts_languages": []},
            (("zh", "en", "ja"), (), ("zh", "en", "ja")), id="explicit-empty-replaces",
        ),
    ],
)
def test_heartbeat_language_fields_merge(language_capabilities, expected):
    caps = BASE.from_heartbeat(heartbeat(language_capabilities=language_capabilities))
    assert (caps.asr_languages, caps.tts_languages, caps.semantic_languages) == expected


def test_heartbeat_with_empty_tts_falls_back_to_semantic_pairs():
    caps = BASE.from_heartbeat(
        heartbeat(language_capabilities={"tts_languages": [], "semantic_languages": ["en"]})
    )
    assert caps.pairs == frozenset({"zh:en", "en:en", "ja:en"})


def test_updated_does_not_mutate():
    caps = BASE.from_heartbeat(heartbeat(capability_by_type=[{"type": "asr", "ready": False}]))
    assert "asr" not in caps.services_ready
    assert "asr" in BASE.services_ready


def test_agent_heartbeat_after_register():
    caps = Capabilities.from_register(register()).from_heartbeat(heartbeat())
    assert caps.services_ready == frozenset({"asr", "nmt", "tts"})
    assert caps.asr_languages == ("zh", "en")
    assert caps.pairs == frozenset({"zh:zh", "zh:en", "en:zh", "en:en"})


# ---------------------------------------------------------------------------------------
# is_healthy


def usage(cpu=10.0, mem=10.0, gpu: float | None = 10.0, gpu_mem: float | None = 10.0):
    return ResourceUsage(
        cpu_percent=cpu, mem_percent=mem, running_jobs=0, gpu_percent=gpu, gpu_mem_percent=gpu_mem
    )


RULES = HealthRules()


@pytest.mark.parametrize(
    ("caps", "load", "healthy"),
    [
        pytest.param(BASE, usage(), True, id="all-good"),
        pytest.param(BASE, usage(cpu=95.0, mem=95.0, gpu=95.0), True, id="at-threshold"),
        pytest.param(BASE, usage(cpu=95.1), False, id="cpu-over"),
        pytest.param(BASE, usage(mem=99.0), False, id="mem-over"),
        pytest.param(BASE, usage(gpu=100.0), False, id="gpu-over"),
        pytest.param(BASE, usage(gpu=None), True, id="gpu-none-ignored"),
        pytest.param(BASE, usage(gpu=None, cpu=96.0), False, id="gpu-none-cpu-over"),
        pytest.param(BASE, usage(gpu_mem=100.0), True, id="gpu-mem-not-a-criterion"),
        pytest.param(
            Capabilities(frozenset({"asr", "nmt"}), ("zh",), ("en",), ()), usage(), False,
            id="tts-missing",
        ),
        pytest.param(
            Capabilities(frozenset({"nmt", "tts"}), ("zh",), ("en",), ()), usage(), False,
            id="asr-missing",
        ),
        pytest.param(
            Capabilities(frozenset({"asr", "nmt", "tts", "tone"}), ("zh",), ("en",), ()),
            usage(), True, id="extra-service-fine",
        ),
        pytest.param(
            Capabilities(frozenset({"asr", "nmt", "tts"}), (), ("en",), ("en",)), usage(), False,
            id="no-asr-languages",
        ),
        pytest.param(
            Capabilities(frozenset({"asr", "nmt", "tts"}), ("zh",), (), ()), usage(), False,
            id="no-target-languages",
        ),
        pytest.param(
            Capabilities(frozenset({"asr", "nmt", "tts"}), ("zh",), (), ("en",)), usage(), True,
            id="semantic-targets-usable",
        ),
    ],
)
def test_is_healthy(caps, load, healthy):
    assert is_healthy(caps, load, RULES) is healthy


@pytest.mark.parametrize(
    ("rules", "caps", "load", "healthy"),
    [
        pytest.param(HealthRules(required_services=frozenset({"asr"})),
                     Capabilities(frozenset({"asr"}), ("zh",), ("en",), ()), usage(), True,
                     id="only-asr-required"),
        pytest.param(HealthRules(required_services=frozenset({"asr"})),
                     Capabilities(frozenset({"asr"}), ("zh",), (), ()), usage(), True,
                     id="asr-only-node-needs-no-target-when-only-asr-required"),
        pytest.param(HealthRules(required_services=frozenset({"asr"})),
                     Capabilities(frozenset({"asr"}), (), ("en",), ()), usage(), False,
                     id="asr-only-required-still-needs-a-source"),
        pytest.param(HealthRules(required_services=frozenset({"asr", "tts"})),
                     Capabilities(frozenset({"asr", "tts"}), ("zh",), (), ()), usage(), False,
                     id="tts-required-needs-a-target"),
        pytest.param(HealthRules(required_services=frozenset()),
                     Capabilities(frozenset(), ("zh",), ("en",), ()), usage(), True,
                     id="nothing-required"),
        pytest.param(HealthRules(resource_threshold_percent=50.0), BASE, usage(cpu=50.0), True,
                     id="custom-threshold-at"),
        pytest.param(HealthRules(resource_threshold_percent=50.0), BASE, usage(cpu=50.5), False,
                     id="custom-threshold-over"),
    ],
)
def test_is_healthy_custom_rules(rules, caps, load, healthy):
    assert is_healthy(caps, load, rules) is healthy


@pytest.mark.parametrize(
    ("rules", "caps", "load", "problem"),
    [
        (RULES, Capabilities(frozenset({"asr"}), ("zh",), ("en",), ()), usage(),
         "services not ready: nmt, tts"),
        (RULES, Capabilities(frozenset({"asr", "nmt", "tts"}), ("zh",), (), ()), usage(),
         "no language pair it can serve"),
        (HealthRules(required_services=frozenset({"asr"})),
         Capabilities(frozenset({"asr"}), (), ("en",), ()), usage(), "no ASR language"),
        (RULES, BASE, ResourceUsage(cpu_percent=1, mem_percent=1, running_jobs=0,
                                    gpu_queue_length=17), "gpu_queue_length 17 > 16"),
        (RULES, BASE, usage(mem=99.5), "mem_percent 99.5 > 95"),
        (RULES, BASE, usage(), None),
    ],
    ids=["services", "no-pair", "no-asr-language", "gpu-queue", "memory", "healthy"],
)
def test_health_problem_says_why(rules, caps, load, problem):
    """The reason goes into the node's status log line."""
    assert health_problem(caps, load, rules) == problem


def test_agent_frames_are_healthy():
    caps = Capabilities.from_register(register()).from_heartbeat(heartbeat())
    assert is_healthy(caps, heartbeat().resource_usage, RULES) is True


# ---------------------------------------------------------------------------------------
# status_after_heartbeat

S = NodeStatus


@pytest.mark.parametrize(
    ("current", "healthy", "expected"),
    [
        (S.REGISTERING, True, S.READY),
        (S.REGISTERING, False, S.REGISTERING),
        (S.READY, True, S.READY),
        (S.READY, False, S.DEGRADED),
        (S.DEGRADED, True, S.READY),
        (S.DEGRADED, False, S.DEGRADED),
        (S.DRAINING, True, S.DRAINING),
        (S.DRAINING, False, S.DRAINING),
        (S.OFFLINE, True, S.OFFLINE),
        (S.OFFLINE, False, S.OFFLINE),
    ],
)
def test_status_after_heartbeat(current, healthy, expected):
    assert status_after_heartbeat(current, healthy) is expected


def test_status_table_covers_every_status():
    assert {s for s in NodeStatus} == {
        S.REGISTERING, S.READY, S.DEGRADED, S.DRAINING, S.OFFLINE
    }
