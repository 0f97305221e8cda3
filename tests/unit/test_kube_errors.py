"""One mapping from a Kubernetes answer to the project's errors (watcher.adapters.kube.request)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from watcher.adapters.kube.request import Target, error_for, transport_error
from watcher.core.errors import (
    KubeAPIError,
    KubeConflict,
    KubeForbidden,
    KubeGone,
    KubeInvalid,
    KubeNotFound,
    KubeServerError,
    KubeThrottled,
    KubeUnauthorized,
    KubeUnavailable,
)

JOB = Target("Job", "batch", "nightly")


@pytest.mark.parametrize(
    ("status", "body", "expected", "transient"),
    [
        (400, {"message": "bad request"}, KubeInvalid, False),
        (401, {"reason": "Unauthorized"}, KubeUnauthorized, False),
        (403, {"message": 'jobs is forbidden: User "x" cannot create'}, KubeForbidden, False),
        (404, {"reason": "NotFound"}, KubeNotFound, False),
        (409, {"reason": "AlreadyExists"}, KubeConflict, False),
        (410, {"reason": "Expired"}, KubeGone, False),
        (422, {"reason": "Invalid", "message": "spec.template: Required"}, KubeInvalid, False),
        (429, {"reason": "TooManyRequests"}, KubeThrottled, True),
        (500, {"reason": "InternalError"}, KubeServerError, True),
        (503, {}, KubeServerError, True),
        (504, {"message": "Too large resource version: 12, current: 10"}, KubeGone, False),
        (405, {"reason": "MethodNotAllowed"}, KubeAPIError, False),
        (200, {"message": "too old resource version: 1 (5)"}, KubeGone, False),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
def test_status_maps_to_one_error_class(
    status: int, body: dict[str, Any], expected: type[KubeAPIError], transient: bool
) -> None:
    error = error_for(status, body, "creating Job", JOB)
    assert type(error) is expected
    assert error.status == status and error.transient is transient
    assert str(error).startswith("creating Job failed (Job/batch/nightly): ")


def test_server_message_is_preferred_over_its_reason_word() -> None:
    error = error_for(422, {"reason": "Invalid", "message": "name too long"}, "creating Job")
    assert error.reason == "name too long"
    assert str(error) == "creating Job failed: 422 name too long"


def test_watch_error_event_takes_the_code_from_the_status_object() -> None:
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    assert isinstance(error_for(None, status, "watch error event"), KubeGone)
    assert type(error_for(None, {"code": 500}, "watch error event")) is KubeServerError
    assert type(error_for(None, {}, "watch error event")) is KubeAPIError


def test_hostile_status_fields_do_not_break_the_mapping() -> None:
    body: dict[str, Any] = {"code": True, "reason": ["Expired"], "message": {"x": 1}}
    error = error_for(None, body, "watch error event")
    assert type(error) is KubeAPIError and error.status is None and error.reason == ""


def test_retry_after_travels_with_the_error() -> None:
    assert error_for(429, {}, "listing", retry_after_s=7.0).retry_after_s == 7.0


@pytest.mark.parametrize(
    ("exc", "timed_out"),
    [
        (TimeoutError(), True),
        (aiohttp.ServerTimeoutError("read"), True),
        (aiohttp.ClientConnectionError("refused"), False),
        (ConnectionResetError(104, "reset by peer"), False),
    ],
)
def test_no_response_is_unavailable(exc: BaseException, timed_out: bool) -> None:
    error = transport_error("reading Job", exc, JOB)
    assert isinstance(error, KubeUnavailable) and error.transient
    assert error.status is None and error.timed_out is timed_out
    assert str(error).startswith("reading Job failed (Job/batch/nightly): ")
