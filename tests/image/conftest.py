"""tests/image: build the image with buildah and prove it (`make image-test`, minutes).

Like the soak runs, these are a separate command, not part of `make test`: without
KUBE_DLQ_IMAGE_TEST=1 nothing here is collected, and the run's header says so. With it, a
missing buildah or debootstrap is installed by scripts/build-image.sh, or the run fails.
"""

from __future__ import annotations

import os

import pytest

REQUESTED = os.environ.get("KUBE_DLQ_IMAGE_TEST") == "1"

collect_ignore_glob = [] if REQUESTED else ["test_*.py"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "buildah: builds and runs the image with buildah")


def pytest_report_header(config: pytest.Config) -> str:
    if REQUESTED:
        return "tests/image: building the image with buildah (KUBE_DLQ_IMAGE_TEST=1)"
    return "tests/image: not collected; `make image-test` builds and proves the image"
