"""structlog configuration: JSON lines in the cluster, readable console output on a TTY.

Event names are static snake_case strings ("dead_lettered", "watch_restarted"); details go
in key-value fields. Job identity is bound per event through contextvars (`job_context`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from watcher.core.settings import LogSettings


def configure(settings: LogSettings) -> None:
    """Configure structlog from the ``log`` settings section, once, at process start."""
    fmt, level = settings.format, settings.level
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
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
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**initial: Any) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(**initial)
    return logger


@contextlib.contextmanager
def job_context(namespace: str, name: str, uid: str) -> Iterator[None]:
    """Bind a Job's identity to every log line written inside the block."""
    with structlog.contextvars.bound_contextvars(namespace=namespace, job=name, job_uid=uid):
        yield
