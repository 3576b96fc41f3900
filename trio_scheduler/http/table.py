"""Every path the one port serves, in the order of README.md's endpoint table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_scheduler.http import probes
from trio_scheduler.http.admin import AdminApi
from trio_scheduler.http.auth import admin_only, bearer_if_set
from trio_scheduler.http.dashboard import dashboard
from trio_scheduler.http.metrics import metrics_endpoint
from trio_scheduler.http.routes import Route, Router
from trio_scheduler.http.stats import stats_endpoint

if TYPE_CHECKING:
    from trio_scheduler.server import Scheduler


def route_table(scheduler: Scheduler) -> Router:
    config = scheduler.config
    readiness = probes.Readiness(scheduler.store, lambda: scheduler.accepting,
                                 lambda: scheduler.admission.overloaded)
    admin = AdminApi(scheduler.manager, scheduler.dispatcher, scheduler.instance_id,
                     scheduler.describe, scheduler.cluster)
    admin_token, metrics_token = config.admin.token, config.metrics.token
    metrics = metrics_endpoint(scheduler.registry, scheduler.instance_labels)
    return Router([
        Route.socket("/ws/session", scheduler.session_socket),
        Route.socket("/ws/node", scheduler.node_socket),
        Route("GET", "/health", probes.health),
        Route("GET", "/ready", readiness.ready),
        Route("GET", "/metrics", bearer_if_set(metrics_token, metrics)),
        Route("GET", "/stats", bearer_if_set(metrics_token, stats_endpoint(scheduler))),
        Route("GET", "/dashboard", dashboard),
        Route("GET", "/admin/nodes", admin_only(admin_token, admin.list_nodes)),
        Route("GET", "/admin/instances", admin_only(admin_token, admin.list_instances)),
        Route("POST", "/admin/nodes/{node_id}/drain", admin_only(admin_token, admin.drain)),
        Route("POST", "/admin/nodes/{node_id}/undrain", admin_only(admin_token, admin.undrain)),
    ])
