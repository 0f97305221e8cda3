"""values.schema.json follows the config file's schema: every section and key the daemon
reads is in it, and nothing else (a key the daemon would refuse is refused at helm time)."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pytest
import yaml

from devtools.helmrender import CHART
from watcher.core.settings import Settings

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
CONFIG_SCHEMA: dict[str, Any] = SCHEMA["properties"]["config"]

SECTIONS = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if dataclasses.is_dataclass(typing.get_type_hints(Settings)[f.name])
}
NOT_YAML_KEYS = {"retry": {"queue"}}
"""Settings fields filled from elsewhere (retry.queue is dead_letter.default_queue)."""


def test_config_top_level_is_the_settings_tree() -> None:
    assert CONFIG_SCHEMA["additionalProperties"] is False
    assert set(CONFIG_SCHEMA["properties"]) == {f.name for f in dataclasses.fields(Settings)}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_each_config_section_has_exactly_the_daemons_keys(section: str) -> None:
    schema = CONFIG_SCHEMA["properties"][section]
    expected = {f.name for f in dataclasses.fields(SECTIONS[section])} - NOT_YAML_KEYS.get(
        section, set()
    )
    assert schema["additionalProperties"] is False, section
    assert set(schema["properties"]) == expected, section


def test_the_documented_example_config_has_only_keys_the_schema_knows() -> None:
    # config/kube-dlq.yaml documents every key: each one must be one the chart lets through
    example = yaml.safe_load((CHART.parents[2] / "config" / "kube-dlq.yaml").read_text())
    for section, body in example.items():
        assert section in CONFIG_SCHEMA["properties"], section
        if isinstance(body, dict):
            known = set(CONFIG_SCHEMA["properties"][section].get("properties", {}))
            assert set(body) <= known, (section, set(body) - known)
