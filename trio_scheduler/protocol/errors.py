"""Error codes exactly as they travel on the wire (PROTOCOL §2.2)."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    INVALID_MESSAGE = "INVALID_MESSAGE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    INVALID_SESSION = "INVALID_SESSION"
    SESSION_CLOSED = "SESSION_CLOSED"
    NODE_UNAVAILABLE = "NODE_UNAVAILABLE"
    NODE_OVERLOADED = "NODE_OVERLOADED"
    MODEL_NOT_AVAILABLE = "MODEL_NOT_AVAILABLE"
    MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
    UNSUPPORTED_FEATURE = "UNSUPPORTED_FEATURE"
    INVALID_PAIRING_CODE = "INVALID_PAIRING_CODE"
    NO_AVAILABLE_NODE = "NO_AVAILABLE_NODE"
    WS_DISCONNECTED = "WS_DISCONNECTED"
    NMT_TIMEOUT = "NMT_TIMEOUT"
    TTS_TIMEOUT = "TTS_TIMEOUT"
    JOB_TIMEOUT = "JOB_TIMEOUT"
    MODEL_VERIFY_FAILED = "MODEL_VERIFY_FAILED"
    MODEL_CORRUPTED = "MODEL_CORRUPTED"
    NO_GPU_AVAILABLE = "NO_GPU_AVAILABLE"
    NODE_ID_CONFLICT = "NODE_ID_CONFLICT"
    INVALID_CAPABILITY_SCHEMA = "INVALID_CAPABILITY_SCHEMA"
    SCHEDULER_DEPENDENCY_DOWN = "SCHEDULER_DEPENDENCY_DOWN"
    UNAUTHORIZED = "UNAUTHORIZED"
    RATE_LIMITED = "RATE_LIMITED"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (documented in docs/decisions.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    POLICY_VIOLATION = 1008  # kept sending above the message rate limit
    MESSAGE_TOO_BIG = 1009
    REPLACED = 4001  # a newer socket registered the same node_id
    HEARTBEAT_TIMEOUT = 4002  # a node sent no heartbeat for heartbeat_timeout_s
    UNRESPONSIVE = 4003  # a node did not register in time, or stopped reading its socket
    IDLE_TIMEOUT = 4008


def map_node_error_code(code: str | None) -> ErrorCode:
    """Translate a node's job error code into one the web client knows.

    Codes the client already understands pass through; anything else (the agent's own
    ``PROCESSING_ERROR`` and friends) becomes INTERNAL_ERROR, with the node's text kept
    in the ``hint``.
    """
    try:
        return ErrorCode(code) if code else ErrorCode.INTERNAL_ERROR
    except ValueError:
        return ErrorCode.INTERNAL_ERROR


ECHO_CHARS = 32


def echo(value: str, limit: int = ECHO_CHARS) -> str:
    """A peer's string quoted for an error message, cut to ``limit`` characters: a message
    names what was wrong without sending a peer's megabyte back to it."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + "…"
