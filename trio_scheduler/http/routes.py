"""Routing of plain HTTP requests by method and path template.

A :class:`Route` names a method, a path template (``/admin/nodes/{node_id}/drain``) and
the handler; a :class:`Router` picks the route for a request and answers what HTTP says
when none fits: 404 for an unknown path, 405 (with ``Allow``) for a known path and
another method, 426 for a plain request to a WebSocket path. ``HEAD`` is served wherever
``GET`` is (the front door leaves the body out), as load balancers probe with it.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from trio_scheduler.http.front_door import HttpHandler, Request, Response, WebSocketHandler


def match_path(template: str, path: str) -> dict[str, str] | None:
    """The ``{name}`` segments of ``template`` taken from ``path``, or None if it differs."""
    wanted = template.split("/")
    given = path.split("/")
    if len(wanted) != len(given):
        return None
    params = {}
    for pattern, segment in zip(wanted, given):
        if pattern.startswith("{") and pattern.endswith("}"):
            if not segment:
                return None
            params[pattern[1:-1]] = segment
        elif pattern != segment:
            return None
    return params


@attrs.frozen
class Route:
    method: str
    template: str
    handler: HttpHandler | None = None
    websocket: WebSocketHandler | None = None  # an upgrade path (GET only)

    @classmethod
    def socket(cls, path: str, handler: WebSocketHandler) -> Route:
        return cls("GET", path, websocket=handler)


@attrs.frozen
class Router:
    routes: tuple[Route, ...] = attrs.field(converter=tuple)

    def websocket_routes(self) -> dict[str, WebSocketHandler]:
        return {r.template: r.websocket for r in self.routes if r.websocket is not None}

    @property
    def paths(self) -> list[str]:
        return [r.template for r in self.routes]

    async def handle(self, request: Request) -> Response:
        """Answer one plain (non-upgrade) HTTP request."""
        matches = [(r, p) for r in self.routes if (p := match_path(r.template, request.path)) is not None]
        if not matches:
            return Response.json(404, {"error": "not found"})
        method = "GET" if request.method == "HEAD" else request.method
        for route, params in matches:
            if route.method != method:
                continue
            if route.websocket is not None:
                return Response.json(
                    426, {"error": "this path takes WebSocket upgrades only"},
                ).with_headers(("upgrade", "websocket"))
            assert route.handler is not None
            return await route.handler(attrs.evolve(request, params=params))
        allowed = _allow_header(route.method for route, _ in matches)
        return Response.json(405, {"error": "method not allowed"}).with_headers(("allow", allowed))


def _allow_header(methods: Iterable[str]) -> str:
    allowed = set(methods)
    if "GET" in allowed:
        allowed.add("HEAD")
    return ", ".join(sorted(allowed))
