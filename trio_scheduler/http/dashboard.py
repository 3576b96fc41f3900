"""``GET /dashboard``: one self-contained page (no build step, nothing fetched from
elsewhere: many deployments reach nothing outside the server). It polls ``/stats`` and
drains or undrains nodes through the admin API; tokens stay in the browser tab."""

from __future__ import annotations

from importlib.resources import files

from trio_scheduler.http.front_door import Request, Response

PAGE = files(__package__).joinpath("dashboard.html").read_bytes()


async def dashboard(request: Request) -> Response:
    return Response(200, PAGE, "text/html; charset=utf-8")
