"""Fixtures of the chart tests: a real helm binary (built from the Go module proxy, never
skipped), plus the e2e daemon fixtures for running kube-dlq with the chart's token."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.devcluster.build import ensure_helm
from devtools.helmrender import CHART
from tests.support.daemon import (  # noqa: F401 (fixtures)
    cluster_name,
    dlq_redis,
    start_daemon,
)

Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    return ensure_helm()


@pytest.fixture
def helm(helm_binary: Path) -> Helm:
    """`helm(*args)`: run helm; the CompletedProcess (the caller checks returncode)."""

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # fixed argv, no shell
            [str(helm_binary), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    return run


@pytest.fixture
def chart() -> str:
    return str(CHART)
