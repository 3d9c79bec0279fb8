"""The cheap paths of the request and apply hot paths render what the slow ones did:
iso_from_ms, the request histogram's cached children, the access line of RequestLog."""

from __future__ import annotations

import datetime
import io
import json
import re
from collections.abc import MutableMapping
from typing import Any

import structlog
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from mox.api.logs import RequestLog, make_logger
from mox.api.metrics import ApiMetrics
from mox.api.status import NodeStatusView
from mox.statemachine.machine import iso_from_ms

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
YEAR_10000_MS = 253402300800000


def reference_iso(ms: int) -> str:
    moment = EPOCH + datetime.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@given(st.integers(0, YEAR_10000_MS - 1))
def test_iso_from_ms_matches_the_datetime_rendering(ms: int) -> None:
    assert iso_from_ms(ms) == reference_iso(ms)


def test_iso_from_ms_edges() -> None:
    assert iso_from_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_from_ms(999) == "1970-01-01T00:00:00.999Z"
    assert iso_from_ms(1000) == "1970-01-01T00:00:01.000Z"
    assert iso_from_ms(YEAR_10000_MS - 1) == "9999-12-31T23:59:59.999Z"


def test_request_histogram_counts_each_label_combination() -> None:
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry, lambda: NodeStatusView(1, "leader", 1, 1, 0, 0))
    for _ in range(3):
        metrics.observe_request("POST", "/api/talents", 201, 0.002)
    metrics.observe_request("POST", "/api/talents", 503, 0.2)
    metrics.observe_request("GET", "/api/talents/{id}", 200, 0.001)

    def count(method: str, route: str, status: str) -> float | None:
        labels = {"method": method, "route": route, "status": status}
        return registry.get_sample_value("mox_http_request_duration_seconds_count", labels)

    assert count("POST", "/api/talents", "201") == 3
    assert count("POST", "/api/talents", "503") == 1
    assert count("GET", "/api/talents/{id}", "200") == 1
    total = registry.get_sample_value(
        "mox_http_request_duration_seconds_sum",
        {"method": "POST", "route": "/api/talents", "status": "201"},
    )
    assert total is not None and abs(total - 0.006) < 1e-9


def test_request_line_has_the_loggers_fields_and_timestamp_format() -> None:
    stream = io.StringIO()
    logger = make_logger(stream, node=7)
    logger.info("other", a=1)  # structlog's own rendering, for comparison
    RequestLog(logger).info("request", {"request_id": "r-1", "status": 201, "duration_ms": 1.5})
    ours, theirs = (json.loads(line) for line in reversed(stream.getvalue().splitlines()))
    assert ours["event"] == "request" and ours["level"] == "info" and ours["node"] == 7
    assert ours["request_id"] == "r-1" and ours["status"] == 201 and ours["duration_ms"] == 1.5
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    assert re.fullmatch(iso, theirs["timestamp"]), theirs
    assert re.fullmatch(iso, ours["timestamp"]), ours
    assert ours["timestamp"] >= theirs["timestamp"]


def test_request_line_falls_back_to_the_logger_for_other_outputs() -> None:
    seen: list[dict[str, Any]] = []

    def capture(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
        seen.append(dict(event))
        return ""

    logger = structlog.wrap_logger(
        structlog.PrintLogger(io.StringIO()),
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(0),
    )
    RequestLog(logger).info("request", {"request_id": "r-2"})
    assert seen == [{"event": "request", "request_id": "r-2"}]
