"""`dlq show` hides inline env values (they may be secrets) unless --reveal is given."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from watcher.cli.dlq import full
from watcher.core.manifest import MASKED, mask_inline_env
from watcher.core.model import DeadLetter, FailureClass, JobRef


def manifest() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "etl", "namespace": "batch"},
        "spec": {
            "template": {
                "spec": {
                    "initContainers": [{"name": "init", "env": [{"name": "A", "value": "x"}]}],
                    "containers": [
                        {
                            "name": "main",
                            "env": [
                                {"name": "DB_PASSWORD", "value": "hunter2"},
                                {
                                    "name": "TOKEN",
                                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}},
                                },
                            ],
                        }
                    ],
                }
            }
        },
    }


def letter(body: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        queue="default",
        job=JobRef("batch", "etl", "uid-1"),
        failure_class=FailureClass.APP_ERROR,
        reason="exit 1",
        attempts=1,
        failed_at=0.0,
        cluster="c",
        manifest=body,
    )


def test_show_hides_inline_values_and_keeps_secret_references() -> None:
    doc = full("default/1-0", letter(manifest()))
    containers = doc["manifest"]["spec"]["template"]["spec"]
    main_env = containers["containers"][0]["env"]
    assert main_env[0] == {"name": "DB_PASSWORD", "value": MASKED}
    assert main_env[1]["valueFrom"] == {"secretKeyRef": {"name": "s", "key": "t"}}
    assert containers["initContainers"][0]["env"][0]["value"] == MASKED
    assert doc["hidden_env_values"] == 2
    assert "hunter2" not in repr(doc)


def test_reveal_shows_the_stored_manifest_as_it_is() -> None:
    doc = full("default/1-0", letter(manifest()), reveal=True)
    assert doc["manifest"] == manifest()
    assert "hidden_env_values" not in doc


def test_masking_leaves_the_stored_entry_untouched() -> None:
    body = manifest()
    before = copy.deepcopy(body)
    mask_inline_env(body)
    assert body == before


@pytest.mark.parametrize(
    "hostile",
    [
        {},
        {"spec": []},
        {"spec": {"template": "x"}},
        {"spec": {"template": {"spec": {"containers": "main"}}}},
        {"spec": {"template": {"spec": {"containers": [1, None, {"env": {"a": 1}}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"env": [None, "x", {"value": 3}]}]}}}},
    ],
)
def test_masking_any_stored_shape_never_raises(hostile: dict[str, Any]) -> None:
    masked, _ = mask_inline_env(hostile)
    assert isinstance(masked, dict)
