"""watcher.core.fastinit: the faster __init__ builds the same frozen values as dataclasses'."""

from __future__ import annotations

import dataclasses

import pytest

from watcher.core.fastinit import fast_init
from watcher.core.model import Condition, ContainerOutcome, JobRef, OwnerRef, PodSnapshot


@dataclasses.dataclass(frozen=True, slots=True)
class _Plain:
    name: str
    uid: str
    phase: str = ""
    conditions: tuple[Condition, ...] = ()
    created_at: float | None = None


_Fast = fast_init(
    dataclasses.make_dataclass(
        "_Fast",
        [(f.name, f.type, f) for f in dataclasses.fields(_Plain)],
        frozen=True,
        slots=True,
    )
)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("p", "u"), {}),
        (("p", "u", "Running"), {"created_at": 1.5}),
        ((), {"uid": "u", "name": "p", "conditions": (Condition("Ready", "True"),)}),
    ],
)
def test_the_same_fields_and_defaults_as_the_generated_init(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    assert dataclasses.asdict(_Fast(*args, **kwargs)) == dataclasses.asdict(_Plain(*args, **kwargs))


def test_the_signature_errors_are_the_generated_ones() -> None:
    with pytest.raises(TypeError):
        _Fast("p")  # uid missing
    with pytest.raises(TypeError):
        _Fast("p", "u", phase="x", nope=1)
    with pytest.raises(TypeError):
        _Fast("p", "u", "Running", name="again")


def test_the_model_values_stay_frozen_dataclasses() -> None:
    ref = JobRef("n", "j", "u")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.name = "other"  # type: ignore[misc]
    assert dataclasses.replace(ref, name="k") == JobRef(namespace="n", name="k", uid="u")
    assert hash(ref) == hash(JobRef(namespace="n", name="j", uid="u"))
    assert dataclasses.asdict(OwnerRef("CronJob", "c", "u")) == {
        "kind": "CronJob",
        "name": "c",
        "uid": "u",
    }
    assert JobRef.__init__.__qualname__ == "JobRef.__init__"


def test_the_projections_are_frozen_too() -> None:
    pod = PodSnapshot("p", "u", phase="Failed", containers=(ContainerOutcome("c", exit_code=2),))
    with pytest.raises(AttributeError):
        pod.phase = "Running"  # type: ignore[misc]
    assert pod == PodSnapshot(name="p", uid="u", phase="Failed", containers=pod.containers)
    assert hash(pod) == hash(PodSnapshot("p", "u", "Failed", containers=pod.containers))


def test_refuses_classes_it_would_build_wrongly() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    for cls in (Mutable, Factory):
        with pytest.raises(TypeError):
            fast_init(cls)
