"""The OOM policy: retry an ``oom_killed`` Job with more memory, up to a cap and a count.

Pure. Quantities are parsed and rendered exactly, as integers of bytes through ``Fraction``
(never a float: 1.1Gi * 1.5 must not come out a byte short): ``parse_quantity`` reads the
Kubernetes forms (``512Mi``, ``1.5Gi``, ``1G``, ``128974848``, ``129e6``, ``500000000m``) and
``format_quantity`` writes the shortest exact one (``1536Mi``, ``8Gi``).

``bump_memory`` multiplies every memory limit and request of a Job's pod template by the
factor: each container's and init container's ``resources``, and the pod-level
``spec.resources`` when present (Kubernetes 1.32+). All of them, not only the container that
was killed: with a pod-level limit, or a sidecar that grew, the killed container is not
always the one that needs the room, and scaling all keeps their ratios. Each new value is
rounded up to a whole Mi, then held to the cap (rounded down to a whole Mi); a request is
never raised above its container's new limit, and nothing is ever lowered.

The policy comes from the config (``retry.oom_memory``) and the annotation
``kube-dlq.io/oom-memory`` (``parse_oom_memory``)::

    factor=<decimal>   1.05..4, at most 3 decimals (default 1.5)
    cap=<quantity>     the most memory any one value may get, 16Mi..16Ti (default 8Gi)
    attempts=<n>       how many bumped retries, 0..100 (default 2)
    off                no OOM policy for this Job (oom_killed behaves as without it)

e.g. ``factor=1.5,cap=8Gi,attempts=2``; parts left out keep the config's value.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from watcher.core.annotations import ANNOTATION_MEMORY_BUMP, ANNOTATION_OOM_MEMORY, parse_count
from watcher.core.rawjson import RawMapping, RawObject

__all__ = [
    "ANNOTATION_MEMORY_BUMP",
    "ANNOTATION_OOM_MEMORY",
    "MAX_CAP_BYTES",
    "MIB",
    "MIN_CAP_BYTES",
    "MemoryBump",
    "OomMemoryPolicy",
    "bump_memory",
    "format_quantity",
    "parse_cap",
    "parse_factor",
    "parse_oom_memory",
    "parse_quantity",
    "without_bump_annotation",
]

KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB
MIN_CAP_BYTES: Final = 16 * MIB
MAX_CAP_BYTES: Final = 16 * 1024 * GIB
"""16Ti: a cap beyond any node's memory is a typo."""
MIN_FACTOR: Final = Fraction(105, 100)
"""Below x1.05 a bump is lost in the Mi rounding and the retry is the same Job again."""
MAX_FACTOR: Final = Fraction(4)
"""Above x4 one OOM asks for a node size class or two more: a typo, or not an OOM to chase."""
DEFAULT_FACTOR: Final = Fraction(3, 2)
DEFAULT_CAP_BYTES: Final = 8 * GIB
DEFAULT_ATTEMPTS: Final = 2

_SUFFIX: Final[dict[str, Fraction]] = {
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QUANTITY_RE: Final = re.compile(
    r"(?P<num>\d+(?:\.\d*)?|\.\d+)(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exp>[+-]?\d{1,2}))?"
)
_MAX_QUANTITY_CHARS: Final = 40
_FACTOR_RE: Final = re.compile(r"\d+(?:\.\d{1,3})?")
# Rendering: binary first (results are whole Mi), then decimal, then plain bytes.
_RENDER: Final = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", GIB), ("Mi", MIB))
_RENDER_DECIMAL: Final = (("T", 10**12), ("G", 10**9), ("M", 10**6), ("Ki", KIB), ("k", 10**3))


def parse_quantity(text: str) -> int:
    """Bytes in a Kubernetes memory quantity, rounded up to a whole byte as Kubernetes does.

    Raises ValueError for anything else (negative, empty, a float form the apiserver rejects).
    """
    cleaned = text.strip()
    match = _QUANTITY_RE.fullmatch(cleaned) if len(cleaned) <= _MAX_QUANTITY_CHARS else None
    if match is None:
        raise ValueError(f"not a memory quantity: {text[:_MAX_QUANTITY_CHARS]!r} (e.g. 512Mi, 8Gi)")
    value = Fraction(match["num"])
    if match["exp"] is not None:
        value *= Fraction(10) ** int(match["exp"])
    else:
        value *= _SUFFIX[match["suffix"] or ""]
    return -(-value.numerator // value.denominator)  # ceil


def format_quantity(n_bytes: int) -> str:
    """The shortest exact form: ``1536Mi``, ``8Gi``, ``1G``, or plain bytes."""
    if n_bytes == 0:
        return "0"
    for suffix, size in (*_RENDER, *_RENDER_DECIMAL):
        if n_bytes % size == 0:
            return f"{n_bytes // size}{suffix}"
    return str(n_bytes)


def parse_factor(text: str) -> Fraction:
    """A bump factor such as ``1.5``: exact, MIN_FACTOR..MAX_FACTOR, at most 3 decimals."""
    cleaned = text.strip()
    if not _FACTOR_RE.fullmatch(cleaned):
        raise ValueError(f"factor must be a decimal number such as 1.5, got {text[:20]!r}")
    factor = Fraction(cleaned)
    if not MIN_FACTOR <= factor <= MAX_FACTOR:
        raise ValueError(f"factor must be between {float(MIN_FACTOR):g} and {float(MAX_FACTOR):g}")
    return factor


def parse_cap(text: str) -> int:
    cap = parse_quantity(text)
    if not MIN_CAP_BYTES <= cap <= MAX_CAP_BYTES:
        raise ValueError(
            f"cap must be between {format_quantity(MIN_CAP_BYTES)} and "
            f"{format_quantity(MAX_CAP_BYTES)}, got {text.strip()[:_MAX_QUANTITY_CHARS]}"
        )
    return cap


@dataclass(frozen=True, slots=True)
class OomMemoryPolicy:
    """Retry oom_killed with memory x``factor``, each value at most ``cap_bytes``, ``attempts``
    times. The policy's ``oom_memory`` is None when it is off."""

    factor: Fraction = DEFAULT_FACTOR
    cap_bytes: int = DEFAULT_CAP_BYTES
    attempts: int = DEFAULT_ATTEMPTS

    def describe(self) -> str:
        factor = f"{float(self.factor):g}"
        return f"factor={factor},cap={format_quantity(self.cap_bytes)},attempts={self.attempts}"


_PARTS: Final = ("factor", "cap", "attempts")


def parse_oom_memory(text: str, base: OomMemoryPolicy | None) -> OomMemoryPolicy | None:
    """The ``kube-dlq.io/oom-memory`` value over ``base`` (the config's; None: off).

    ``off`` (or ``false``) turns the policy off; ``on`` (or ``true``) turns it on with the
    base's values or the defaults. Raises ValueError naming the bad part.
    """
    cleaned = text.strip().lower()
    if cleaned in ("off", "false"):
        return None
    policy = base or OomMemoryPolicy()
    if cleaned in ("on", "true"):
        return policy
    seen: set[str] = set()
    for raw in text.split(","):
        name, sep, value = raw.strip().partition("=")
        name = name.strip().lower()
        if not sep or name not in _PARTS:
            raise ValueError(
                f"unknown part {raw.strip()[:40]!r} (expected factor=<n>, cap=<quantity>, "
                "attempts=<n>, or off)"
            )
        if name in seen:
            raise ValueError(f"{name} given twice")
        seen.add(name)
        if name == "factor":
            policy = dataclasses.replace(policy, factor=parse_factor(value))
        elif name == "cap":
            policy = dataclasses.replace(policy, cap_bytes=parse_cap(value))
        else:
            policy = dataclasses.replace(policy, attempts=parse_count(value))
    return policy


# --- the bump -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryChange:
    where: str
    """e.g. "main limits", "pod requests"."""
    old: int
    new: int
    limit: bool
    """A limit (True) or a request."""

    def describe(self) -> str:
        return f"{self.where} {format_quantity(self.old)} -> {format_quantity(self.new)}"


@dataclass(frozen=True, slots=True)
class MemoryBump:
    """What ``bump_memory`` would do to a manifest."""

    policy: OomMemoryPolicy
    changes: tuple[MemoryChange, ...]
    found: int
    """Memory values the manifest sets (parseable ones)."""
    limits_found: int
    """Of which limits."""
    manifest: RawObject
    """The manifest with the changes and the memory-bump annotation (a copy)."""

    @property
    def at_cap(self) -> bool:
        """Values to raise exist, but none that matters can grow. With limits, that is the
        limits (the OOM killer acts at the limit: a larger request alone changes nothing);
        with requests only (a node out of memory), the requests."""
        if self.limits_found:
            return not any(c.limit for c in self.changes)
        return self.found > 0 and not self.changes

    @property
    def summary(self) -> str:
        factor = f"x{float(self.policy.factor):g}"
        text = f"{factor}: " + ", ".join(c.describe() for c in self.changes)
        return text if len(text) <= _MAX_SUMMARY else text[: _MAX_SUMMARY - 1] + "…"


_MAX_SUMMARY: Final = 1000


def _mi_up(value: Fraction) -> int:
    return -(-value.numerator // (value.denominator * MIB)) * MIB


def _resource_blocks(spec: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, resources) of the pod-level block and every container, in the manifest."""
    if not isinstance(spec, dict):
        return
    pod_resources = spec.get("resources")
    if isinstance(pod_resources, dict):
        yield "pod", pod_resources
    for key in ("initContainers", "containers"):
        containers = spec.get(key)
        if not isinstance(containers, list):
            continue
        for index, c in enumerate(containers):
            if isinstance(c, dict) and isinstance(c.get("resources"), dict):
                name = c.get("name")
                label = name if isinstance(name, str) and name else f"{key}[{index}]"
                yield label, c["resources"]


def _memory_of(resources: dict[str, Any], kind: str) -> int | None:
    values = resources.get(kind)
    if not isinstance(values, dict) or not isinstance(values.get("memory"), str):
        return None
    try:
        return parse_quantity(values["memory"])
    except ValueError:
        return None  # the apiserver validated it; a stored manifest that is odd is left alone


def bump_memory(manifest: RawMapping, policy: OomMemoryPolicy) -> MemoryBump:
    """The manifest with every memory limit and request raised by the policy (see above)."""
    body: RawObject = copy.deepcopy(dict(manifest))
    spec = body.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod_spec = template.get("spec") if isinstance(template, dict) else None
    cap = policy.cap_bytes // MIB * MIB
    changes: list[MemoryChange] = []
    found = limits_found = 0
    for label, resources in _resource_blocks(pod_spec):
        limit = _memory_of(resources, "limits")
        new_limit = limit
        limits_found += limit is not None
        for kind, old in (("limits", limit), ("requests", _memory_of(resources, "requests"))):
            if old is None:
                continue
            found += 1
            new = min(_mi_up(old * policy.factor), cap)
            if kind == "requests" and new_limit is not None:
                new = min(new, new_limit)
            if new <= old:
                continue
            if kind == "limits":
                new_limit = new
            resources[kind]["memory"] = format_quantity(new)
            changes.append(MemoryChange(f"{label} {kind}", old, new, limit=kind == "limits"))
    bump = MemoryBump(policy, tuple(changes), found, limits_found, body)
    if changes:
        meta = body.setdefault("metadata", {})
        if isinstance(meta, dict):
            annotations = meta.get("annotations")
            annotations = dict(annotations) if isinstance(annotations, dict) else {}
            annotations[ANNOTATION_MEMORY_BUMP] = bump.summary
            meta["annotations"] = annotations
    return bump


def without_bump_annotation(manifest: RawMapping) -> RawObject:
    """``manifest`` without an earlier attempt's memory-bump annotation (this retry had none)."""
    meta = manifest.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(annotations, dict):
        return dict(manifest)
    if ANNOTATION_MEMORY_BUMP not in annotations:
        return dict(manifest)
    body: RawObject = dict(manifest)
    body["metadata"] = {
        **meta,
        "annotations": {k: v for k, v in annotations.items() if k != ANNOTATION_MEMORY_BUMP},
    }
    return body
