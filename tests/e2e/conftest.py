"""Fixtures of the end-to-end tests (defined in tests/support, registered here)."""

from __future__ import annotations

from tests.support.daemon import (  # noqa: F401 (fixtures)
    cluster_name,
    dlq_redis,
    own_redis,
    spawn_daemon,
    start_daemon,
)
