"""devtools.helmrender's pure part: splitting `helm template` output by the template it came
from (what decides which plain manifest a document goes to)."""

from __future__ import annotations

import pytest

from devtools.helmrender import split_by_template

CASES = [
    ("", []),
    ("---\n# Source: kube-dlq/templates/rbac.yaml\nkind: Role\n", [("rbac.yaml", "kind: Role")]),
    (
        "---\n# Source: c/templates/a.yaml\nkind: A\n---\n# Source: c/templates/b.yaml\nkind: B\n",
        [("a.yaml", "kind: A"), ("b.yaml", "kind: B")],
    ),
    # a template that renders nothing (an optional part that is off) leaves no document
    (
        "---\n# Source: c/templates/off.yaml\n\n---\n# Source: c/templates/on.yaml\nx: 1\n",
        [("on.yaml", "x: 1")],
    ),
    # comments inside a document stay with it
    (
        "---\n# Source: c/templates/r.yaml\n# why\nkind: R\nmetadata:\n  namespace: a  # scope\n",
        [("r.yaml", "# why\nkind: R\nmetadata:\n  namespace: a  # scope")],
    ),
    # a document with no Source line is not helm's: dropped
    ("---\nkind: Stray\n", []),
]


@pytest.mark.parametrize(("rendered", "expected"), CASES)
def test_split_by_template(rendered: str, expected: list[tuple[str, str]]) -> None:
    assert split_by_template(rendered) == expected
