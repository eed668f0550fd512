"""structlog set-up: JSON lines to stdout (as journald and collectors want), console on a tty."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", fmt: str | None = None) -> None:
    """``fmt`` None picks console on a terminal and JSON elsewhere."""
    if fmt is None:
        fmt = "console" if sys.stdout.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        # One write per line (message and newline together): the supervisor and its workers
        # share stdout, and a line written in two parts can interleave with another
        # process's line when output is unbuffered (PYTHONUNBUFFERED, as under systemd).
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
