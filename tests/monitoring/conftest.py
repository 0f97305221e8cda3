"""Fixtures of the monitoring tests (the e2e daemon fixtures, defined in tests/support)."""

from __future__ import annotations

from tests.support.daemon import (  # noqa: F401 (fixtures)
    cluster_name,
    dlq_redis,
    start_daemon,
)
