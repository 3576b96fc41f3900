"""Who may use what: tokens for the operator endpoints and admission of WebSocket upgrades.

Tokens are compared in constant time. Operator endpoints take them only as
``Authorization: Bearer`` (a query string ends up in access logs and browser history);
the node agent and the web client may also pass theirs as ``?token=``, as the contract
allows.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import parse_qs

import attrs
import trio

from trio_scheduler.admission import Admission
from trio_scheduler.config import Config
from trio_scheduler.http.front_door import HttpHandler, Request, Response
from trio_scheduler.nodes.identity import NodeIdentity


def token_matches(request: Request, token: str, *, query: bool = True) -> bool:
    presented = []
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        presented.append(authorization[7:].strip())
    if query:
        presented.extend(parse_qs(request.query).get("token", []))
    return any(secrets.compare_digest(p.encode(), token.encode()) for p in presented)


def admin_only(token: str | None, handler: HttpHandler) -> HttpHandler:
    """The admin API is off without ``[admin] token`` (403) and needs it as a bearer (401)."""

    async def guarded(request: Request) -> Response:
        if not token:
            return Response.json(403, {"error": "the admin API is off ([admin] token unset)"})
        if not token_matches(request, token, query=False):
            return Response.json(401, {"error": "admin token required"})
        return await handler(request)

    return guarded


def bearer_if_set(token: str | None, handler: HttpHandler) -> HttpHandler:
    """Open without a token; with one, it must come as a bearer token (401 otherwise)."""
    if not token:
        return handler

    async def guarded(request: Request) -> Response:
        if not token_matches(request, token, query=False):
            return Response.json(401, {"error": "bearer token required"})
        return await handler(request)

    return guarded


def node_identity(
    request: Request, tokens: Iterable[str] | Mapping[str, Iterable[str]]
) -> NodeIdentity | None:
    """The node ids the request's token lets it claim (None: no valid token). Without
    tokens configured, every node is any node."""
    if not tokens:
        return NodeIdentity()
    if not isinstance(tokens, Mapping):
        return NodeIdentity() if any(token_matches(request, t) for t in tokens) else None
    for token, patterns in tokens.items():
        if token_matches(request, token):
            return NodeIdentity(tuple(patterns))
    return None


@attrs.define
class UpgradeGate:
    """Admission of WebSocket upgrades, decided before the handshake.

    With ``[nodes] auth_tokens`` set, a node must present one of them: an unauthenticated
    peer must never receive a user's audio. Sessions may be limited to ``[sessions]
    allowed_origins`` and/or ``[sessions] auth_tokens``. While the server drains, new
    sessions get 503 (a load balancer sends the browser's retry elsewhere); nodes are
    still let in, as a reconnecting node may carry results of jobs in flight. While the
    process cannot keep up (``admission``), new sessions get 503 with ``Retry-After``;
    nodes are let in then too, as they add capacity.
    Refusals are counted by reason (``refusals``) for the metrics.
    """

    config: Config
    accepting: Callable[[], bool]
    admission: Admission | None = None
    refusals: collections.Counter[str] = attrs.Factory(collections.Counter)

    def admit(self, request: Request) -> Response | None:
        refusal, reason = self._check(request)
        if refusal is not None:
            self.refusals[reason] += 1
        return refusal

    def _check(self, request: Request) -> tuple[Response | None, str]:
        if request.path == "/ws/node":
            if node_identity(request, self.config.nodes.auth_tokens) is None:
                return Response.json(401, {"error": "a valid node token is required"}), "auth"
        if request.path == "/ws/session":
            sessions = self.config.sessions
            origin = request.headers.get("origin")
            if sessions.allowed_origins and origin not in sessions.allowed_origins:
                return Response.json(403, {"error": "origin not allowed"}), "auth"
            if sessions.auth_tokens and not any(
                token_matches(request, token) for token in sessions.auth_tokens
            ):
                return Response.json(401, {"error": "a valid session token is required"}), "auth"
            if not self.accepting():
                return Response.json(503, {"error": "the server is draining"}), "draining"
            if self.admission is not None:
                reason = self.admission.refuse_session(trio.current_time())
                if reason is not None:
                    return _busy(reason, self.admission.retry_after_s), reason
        return None, ""


_BUSY_MESSAGES = {
    "overloaded": "the server is overloaded; try again later or elsewhere",
    "session_start_rate": "too many sessions starting at once; try again shortly",
}


def _busy(reason: str, retry_after_s: int) -> Response:
    retry = retry_after_s if reason == "overloaded" else 1
    return Response.json(503, {"error": _BUSY_MESSAGES[reason], "reason": reason}).with_headers(
        ("retry-after", str(retry)))
