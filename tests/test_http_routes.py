"""The route table and the router: what HTTP answers for each path and method."""

from __future__ import annotations

import pytest

from trio_scheduler.http.front_door import Request, Response
from trio_scheduler.http.routes import Route, Router, match_path


@pytest.mark.parametrize(
    ("template", "path", "params"),
    [
        ("/health", "/health", {}),
        ("/health", "/health/", None),
        ("/admin/nodes/{node_id}/drain", "/admin/nodes/node-1/drain", {"node_id": "node-1"}),
        ("/admin/nodes/{node_id}/drain", "/admin/nodes//drain", None),
        ("/admin/nodes/{node_id}/drain", "/admin/nodes/node-1/undrain", None),
        ("/admin/nodes/{node_id}/drain", "/admin/nodes/node-1", None),
    ],
)
def test_match_path(template, path, params):
    assert match_path(template, path) == params


async def echo(request: Request) -> Response:
    return Response.json(200, {"method": request.method, "params": dict(request.params)})


async def socket(ws, request) -> None:  # never called for plain requests
    raise AssertionError


ROUTER = Router([
    Route.socket("/ws/session", socket),
    Route("GET", "/health", echo),
    Route("POST", "/admin/nodes/{node_id}/drain", echo),
])


def request(method: str, path: str) -> Request:
    return Request(method, path, "", {})


async def test_a_route_gets_its_path_parameters():
    response = await ROUTER.handle(request("POST", "/admin/nodes/n-7/drain"))
    assert response == Response.json(200, {"method": "POST", "params": {"node_id": "n-7"}})


async def test_head_is_served_by_the_get_route():
    response = await ROUTER.handle(request("HEAD", "/health"))
    assert response.status == 200


async def test_unknown_path_is_404_and_wrong_method_405_with_allow():
    assert (await ROUTER.handle(request("GET", "/nope"))).status == 404
    response = await ROUTER.handle(request("DELETE", "/health"))
    assert response.status == 405 and ("allow", "GET, HEAD") in response.headers
    response = await ROUTER.handle(request("GET", "/admin/nodes/n-7/drain"))
    assert response.status == 405 and ("allow", "POST") in response.headers


async def test_plain_request_to_a_websocket_path_is_426():
    for method in ("GET", "HEAD"):
        response = await ROUTER.handle(request(method, "/ws/session"))
        assert response.status == 426 and ("upgrade", "websocket") in response.headers
    assert ROUTER.websocket_routes() == {"/ws/session": socket}
