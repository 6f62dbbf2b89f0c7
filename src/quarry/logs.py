"""Structured logs: one JSON object per line on stderr, with request and job ids bound.

Standard-library loggers (uvicorn, procrastinate, psycopg) go through the same renderer, so
every line of a quarry process has the same shape.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from quarry.auth.keys import redact
from quarry.settings import Settings


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_keys,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "procrastinate"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # pgserver narrates every initdb and pg_ctl call at INFO.
    logging.getLogger("pgserver").setLevel(max(level, logging.WARNING))
    # quarry logs each request itself, with its id; uvicorn's access line would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def _redact_keys(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """No API key's secret reaches a log line, whatever carried it: a path (a whole key
    pasted where its prefix goes), an error's detail, a traceback."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in event.items()}
