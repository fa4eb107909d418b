"""Logging: structlog, JSON lines (via orjson) on stdout, or a console renderer for development."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def configure_logging(*, level: str = "info", fmt: str = "json") -> None:
    """Configure structlog and the stdlib root logger once, at start-up."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "console":
        renderer: structlog.types.Processor = structlog.dev.ConsoleRenderer()
        factory: structlog.types.WrappedLogger = structlog.PrintLoggerFactory()
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
