"""The REST API of a node (aiohttp). See docs/api.md."""

from mox.api.app import (
    FORWARDED_HEADER,
    LEADER_HEADER,
    METRICS,
    REQUEST_BODY_MAX_BYTES,
    NodeApi,
    create_app,
)
from mox.api.logs import make_logger
from mox.api.metrics import ApiMetrics
from mox.api.status import NodeStatusView, status_view

__all__ = [
    "FORWARDED_HEADER",
    "LEADER_HEADER",
    "METRICS",
    "REQUEST_BODY_MAX_BYTES",
    "ApiMetrics",
    "NodeApi",
    "NodeStatusView",
    "create_app",
    "make_logger",
    "status_view",
]
