"""Structured JSON logs: one object per line, with the request's context merged in.

The middleware binds `request_id` (and later `tenant_id`, `route`) with structlog's
contextvars; every log call made while serving that request carries them.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger


def make_logger(stream: TextIO | None = None, **initial: Any) -> FilteringBoundLogger:
    """A JSON logger writing to `stream` (stderr by default); no global configuration."""
    logger: FilteringBoundLogger = structlog.wrap_logger(
        structlog.WriteLogger(stream if stream is not None else sys.stderr),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(0),
    )
    return logger.bind(**initial) if initial else logger
