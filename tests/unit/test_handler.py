"""FailureHandler: one failed Job's report in, one outcome (retry ticket or dead letter) out.

A malformed kube-dlq.io/ annotation is reported once per failed Job, however often its
outcome write is attempted (Redis down) or replayed (restart, relist, another replica); the
rest runs against FakeStore and FakeJobs, with a fake clock.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import pytest
import structlog
from structlog.testing import capture_logs

from tests.support.fakes import FakeClock, FakeJobs, FakeStore
from tests.support.objects import (
    DISRUPTION_MESSAGES,
    JOB_NAME,
    JOB_UID,
    NAMESPACE,
    NODE,
    T0_UNIX,
    Raw,
    disruption,
    raw_job,
    raw_pod,
    report,
    terminated,
    waiting,
)
from watcher.core.errors import KubeForbidden, SinkError
from watcher.core.lineage import CreateRecord, Lineage
from watcher.core.manifest import manifest_for_ticket, with_create_token
from watcher.core.memory import OomMemoryPolicy
from watcher.core.model import (
    Action,
    Condition,
    ContainerOutcome,
    DeadLetter,
    FailureClass,
    FailureReport,
    JobRef,
    JobSnapshot,
    PodSnapshot,
    RetryTicket,
    WriteResult,
)
from watcher.core.policy import RetryPolicy
from watcher.core.settings import ClassifySettings
from watcher.kit.metrics import Metrics
from watcher.service.handler import FailureHandler, Outcome

WRITTEN = WriteResult(True, Action.DEAD_LETTER, "default/1-0")
ALREADY = WriteResult(False, Action.DEAD_LETTER, "default/1-0")
DOWN = SinkError("redis dead_letter failed: ConnectionError")


class ScriptedSink:
    """Answers each dead_letter call with the next scripted result (or raises it)."""

    def __init__(self, *results: WriteResult | SinkError) -> None:
        self.results = list(results)
        self.calls = 0

    async def dead_letter(self, letter: DeadLetter) -> WriteResult:
        self.calls += 1
        result = self.results.pop(0)
        if isinstance(result, SinkError):
            raise result
        return result


def failed_report(annotations: tuple[tuple[str, str], ...]) -> FailureReport:
    job = JobSnapshot(
        ref=JobRef("batch", "cleanup", "job-uid"),
        annotations=annotations,
        conditions=(Condition("Failed", "True", "BackoffLimitExceeded"),),
        failed=1,
    )
    pod = PodSnapshot(
        name="cleanup-x",
        uid="pod-uid",
        phase="Failed",
        containers=(ContainerOutcome("main", exit_code=3, terminated_reason="Error"),),
    )
    return FailureReport(job=job, pods=(pod,))


MALFORMED = (("kube-dlq.io/max-retries", "lots"),)


async def attempts(
    results: tuple[WriteResult | SinkError, ...],
    annotations: tuple[tuple[str, str], ...] = MALFORMED,
) -> tuple[list[str], float]:
    """Handle one failed Job until a write returns; (keys reported, malformed metric)."""
    metrics = Metrics()
    jobs = FakeJobs()
    handler = FailureHandler(
        store=ScriptedSink(*results),  # type: ignore[arg-type]
        jobs=jobs,
        policy=RetryPolicy(),
        classify=ClassifySettings(),
        cluster_name="test",
        metrics=metrics,
        logger=structlog.get_logger(),
        rng=random.Random(0),
    )
    for result in results:
        try:
            outcome = await handler.handle(failed_report(annotations=annotations), {})
        except SinkError:
            assert isinstance(result, SinkError)
            continue
        assert outcome.classification.failure_class.value == "app_error"
    count = metrics.registry.get_sample_value(
        "kube_dlq_malformed_input_total", {"source": "annotation"}
    )
    assert {reason for _, reason, _ in jobs.events} <= {"InvalidRetryPolicy"}
    reported = [message.split("=", 1)[0] for _, _, message in jobs.events]
    return reported, count or 0.0


CASES = {
    "written at once": ((WRITTEN,), 1),
    "written after Redis was down twice": ((DOWN, DOWN, WRITTEN), 1),
    "a replay of a Job another writer handled": ((ALREADY,), 0),
    "a timed-out write that landed after all": ((DOWN, ALREADY), 1),
}


@pytest.mark.parametrize(("results", "reports"), CASES.values(), ids=list(CASES))
async def test_malformed_annotation_is_reported_once_by_whoever_wrote_the_outcome(
    results: tuple[WriteResult | SinkError, ...], reports: int
) -> None:
    reported, metric = await attempts(results)
    assert reported == ["kube-dlq.io/max-retries"] * reports
    assert metric == reports


async def test_lineage_annotations_are_not_policy_errors() -> None:
    # Given a Job whose kube-dlq.io/history annotation was mangled by hand
    mangled = (("kube-dlq.io/attempt", "2"), ("kube-dlq.io/history", "{not json"))

    # When it fails and its outcome is written
    reported, metric = await attempts((WRITTEN,), annotations=mangled)

    # Then no policy annotation is reported: lineage never comes from annotations (reported as
    # lineage_annotation_ignored instead, tests/unit/test_lineage.py)
    assert reported == []
    assert metric == 0


# --- outcomes, against FakeStore and FakeJobs --------------------------------------------------

NOW = T0_UNIX + 120.0
REF = JobRef(NAMESPACE, JOB_NAME, JOB_UID)
QUEUE = "kube-dlq.io/queue"
AVOID_NODE = "kube-dlq.io/avoid-node"
ATTEMPT = "kube-dlq.io/attempt"
RETRY_OF = "kube-dlq.io/retry-of"
CREATE_TOKEN = "kube-dlq.io/create-token"
MAX_RETRIES = "kube-dlq.io/max-retries"
AVOIDED = f"retry avoid={NODE}"
NOT_AVOIDED = "retry avoid="
BATCH_DLQ = RetryPolicy(queue="batch-dlq")


@dataclass
class Rig:
    handler: FailureHandler
    store: FakeStore
    jobs: FakeJobs | None
    metrics: Metrics

    async def handle(self, pods: list[Raw], **annotations: str) -> Outcome:
        """Handle the default Job, Failed, with `pods` and these extra annotations."""
        job = raw_job()
        job["metadata"]["annotations"].update(annotations)
        return await self.handler.handle(report(job, pods), job)

    def outcome(self) -> str:
        """The one outcome written, in one line: "retry avoid=<node>" or "dead_letter <queue>"."""
        assert len(self.store.outcomes) == 1
        if self.store.tickets:
            return f"retry avoid={self.store.tickets[0].avoid_node}"
        return f"dead_letter {self.store.dead_letters[0].queue}"


def rig(policy: RetryPolicy | None = None, *, jobs: FakeJobs | None = None) -> Rig:
    metrics = Metrics()
    store = FakeStore()
    handler = FailureHandler(
        store=store, jobs=jobs, policy=policy or RetryPolicy(), classify=ClassifySettings(),
        cluster_name="unit", metrics=metrics, logger=structlog.get_logger(),
        clock=FakeClock(NOW), rng=random.Random(0),
    )  # fmt: skip
    return Rig(handler, store, jobs, metrics)


def lost_pod() -> Raw:
    """Deleted by the taint manager when its node became unreachable: node_lost."""
    message = DISRUPTION_MESSAGES["DeletionByTaintManager"]
    return raw_pod(
        conditions=[disruption("DeletionByTaintManager", message)],
        containers=[terminated(exit_code=137)],
    )


def evicted_pod() -> Raw:
    """Evicted by the kubelet under memory pressure: evicted."""
    return raw_pod(reason="Evicted", message="The node was low on resource: memory.")


def preempted_pod() -> Raw:
    """Preempted by the scheduler for a higher-priority pod: preempted (not the node's fault)."""
    message = DISRUPTION_MESSAGES["PreemptionByScheduler"]
    return raw_pod(conditions=[disruption("PreemptionByScheduler", message)])


def app_pod() -> Raw:
    """Its container exited with code 2: app_error."""
    return raw_pod(containers=[terminated(exit_code=2)])


RETRIED = {
    "node_lost: deleted by the taint manager": (lost_pod, FailureClass.NODE_LOST),
    "evicted by the kubelet": (evicted_pod, FailureClass.EVICTED),
}


@pytest.mark.parametrize(("pod", "fclass"), RETRIED.values(), ids=list(RETRIED))
async def test_retryable_failure_schedules_the_next_attempt_after_now(
    pod: Callable[[], Raw], fclass: FailureClass
) -> None:
    # Given the default policy (infrastructure classes are retried)
    r = rig(jobs=FakeJobs())

    # When the Job's first attempt fails this way
    outcome = await r.handle([pod()])

    # Then one retry ticket is written, for attempt 2, due after now; no dead letter
    assert outcome.decision.action is Action.RETRY
    [ticket] = r.store.tickets
    assert (ticket.job, ticket.failure_class, ticket.attempt) == (REF, fclass, 2)
    assert NOW < ticket.due_at <= NOW + 30  # the first retry's delay: 30 s, full jitter
    assert ticket.manifest["metadata"]["name"] == JOB_NAME
    assert [(h.attempt, h.failure_class) for h in ticket.history] == [(1, fclass)]
    assert r.store.dead_letters == []


ATTEMPTS = {"first attempt": (None, 2), "second attempt": ("2", 3), "fourth attempt": ("4", 5)}


@pytest.mark.parametrize(("attempt", "next_attempt"), ATTEMPTS.values(), ids=list(ATTEMPTS))
async def test_retry_ticket_carries_the_failed_attempt_plus_one(
    attempt: str | None, next_attempt: int
) -> None:
    # Given a Job that is attempt `attempt` of its lineage (kube-dlq.io/attempt and kube-dlq's
    # create record of it; none: 1)
    r = rig(jobs=FakeJobs())
    annotations = {ATTEMPT: attempt} if attempt is not None else {}
    if attempt is not None:
        annotations.update({RETRY_OF: "ticket-0", CREATE_TOKEN: "ab" * 16})
        lineage = Lineage(int(attempt), ())
        r.store.records["ticket-0"] = CreateRecord(NAMESPACE, JOB_NAME, "ab" * 16, JOB_UID, lineage)

    # When it fails with a retried class
    await r.handle([lost_pod()], **annotations)

    # Then the ticket re-creates it as the next attempt
    assert [t.attempt for t in r.store.tickets] == [next_attempt]


AVOIDING = {
    # pod, policy avoid_failed_node, kube-dlq.io/avoid-node, outcome
    "node_lost, default": (lost_pod, True, None, AVOIDED),
    "evicted, default": (evicted_pod, True, None, AVOIDED),
    "node_lost, avoid_failed_node off": (lost_pod, False, None, NOT_AVOIDED),
    "node_lost, annotated avoid-node=false": (lost_pod, True, "false", NOT_AVOIDED),
    "node_lost, off but annotated avoid-node=true": (lost_pod, False, "true", AVOIDED),
    "preempted: not the node's fault": (preempted_pod, True, None, NOT_AVOIDED),
}


@pytest.mark.parametrize(
    ("pod", "avoid", "annotation", "expected"), AVOIDING.values(), ids=list(AVOIDING)
)
async def test_retry_avoids_the_failed_pods_node_when_avoid_failed_node(
    pod: Callable[[], Raw], avoid: bool, annotation: str | None, expected: str
) -> None:
    # Given a policy with avoid_failed_node on or off, maybe overridden by the Job
    r = rig(RetryPolicy(avoid_failed_node=avoid), jobs=FakeJobs())
    annotations = {AVOID_NODE: annotation} if annotation is not None else {}

    # When its pod on NODE fails with a retried class
    await r.handle([pod()], **annotations)

    # Then the retry avoids that node only when the node was at fault and avoiding is on
    assert r.outcome() == expected


QUEUES = {
    # policy queue, kube-dlq.io/queue, outcome
    "the default queue": (RetryPolicy(), None, "dead_letter default"),
    "the configured queue": (BATCH_DLQ, None, "dead_letter batch-dlq"),
    "the Job's queue annotation wins": (BATCH_DLQ, "team-a", "dead_letter team-a"),
}


@pytest.mark.parametrize(("policy", "annotation", "expected"), QUEUES.values(), ids=list(QUEUES))
async def test_non_retryable_failure_is_dead_lettered_to_its_queue(
    policy: RetryPolicy, annotation: str | None, expected: str
) -> None:
    # Given a policy with a dead-letter queue, maybe overridden by the Job
    r = rig(policy, jobs=FakeJobs())
    annotations = {QUEUE: annotation} if annotation is not None else {}

    # When the Job fails with a class that is not retried (app_error)
    outcome = await r.handle([app_pod()], **annotations)

    # Then one dead letter is written to that queue, with the pod's classification
    assert r.outcome() == expected
    [letter] = r.store.dead_letters
    assert outcome.classification.failure_class is FailureClass.APP_ERROR
    assert (letter.job, letter.failure_class, letter.attempts) == (REF, FailureClass.APP_ERROR, 1)
    assert (letter.cluster, letter.failed_at) == ("unit", NOW)
    assert r.store.tickets == []
    queue = expected.split()[1]
    labels = {"queue": queue, "failure_class": "app_error"}
    assert r.metrics.registry.get_sample_value("kube_dlq_dead_letters_total", labels) == 1


async def test_dead_letters_trimmed_to_make_room_are_counted_and_logged_by_queue() -> None:
    # Given a queue at its cap: writing the next dead letter trims 4 older ones
    r = rig(BATCH_DLQ, jobs=FakeJobs())
    r.store.trims.append(4)

    # When a Job fails with a class that is not retried
    with capture_logs() as logs:
        outcome = await r.handle([app_pod()])

    # Then the write reports the 4, they are counted on that queue and logged with it
    assert outcome.write.trimmed == 4
    trimmed = "kube_dlq_dead_letters_trimmed_total"
    assert r.metrics.registry.get_sample_value(trimmed, {"queue": "batch-dlq"}) == 4
    [line] = [line for line in logs if line["event"] == "dead_letters_trimmed"]
    assert (line["queue"], line["removed"], line["log_level"]) == ("batch-dlq", 4, "warning")


async def test_a_write_that_trims_nothing_logs_no_trim() -> None:
    # Given a queue below its cap
    r = rig(BATCH_DLQ, jobs=FakeJobs())

    # When a Job is dead-lettered
    with capture_logs() as logs:
        outcome = await r.handle([app_pod()])

    # Then nothing is reported trimmed, counted or logged
    assert outcome.write.written and outcome.write.trimmed == 0
    trimmed = "kube_dlq_dead_letters_trimmed_total"
    assert r.metrics.registry.get_sample_value(trimmed, {"queue": "batch-dlq"}) is None
    assert "dead_letters_trimmed" not in [line["event"] for line in logs]


MALFORMED_POLICY = {
    # pod, key, value, outcome (the default for that key applies)
    "queue name with spaces": (app_pod, QUEUE, "Team A!", "dead_letter batch-dlq"),
    "avoid-node not a boolean": (lost_pod, AVOID_NODE, "perhaps", AVOIDED),
    "max-retries not a number": (lost_pod, MAX_RETRIES, "lots", AVOIDED),
    "unknown key (a typo)": (app_pod, "kube-dlq.io/max-retry", "3", "dead_letter batch-dlq"),
}


@pytest.mark.parametrize(
    ("pod", "key", "value", "expected"), MALFORMED_POLICY.values(), ids=list(MALFORMED_POLICY)
)
async def test_malformed_annotation_warns_on_the_job_and_its_default_applies(
    pod: Callable[[], Raw], key: str, value: str, expected: str
) -> None:
    # Given a Job with one malformed kube-dlq.io/ annotation
    jobs = FakeJobs()
    r = rig(BATCH_DLQ, jobs=jobs)

    # When it fails
    await r.handle([pod()], **{key: value})

    # Then one InvalidRetryPolicy Warning Event names the key, and the default is used
    [(job, reason, message)] = jobs.events
    assert (job, reason) == (REF, "InvalidRetryPolicy")
    assert message.startswith(f"{key}={value!r}: ")
    assert message.endswith("kube-dlq applied the default for this key")
    assert r.outcome() == expected


async def test_warning_event_refused_is_logged_and_the_outcome_still_written() -> None:
    # Given a Job with a malformed annotation, and RBAC refusing to create Events
    jobs = FakeJobs()
    jobs.fail_next(KubeForbidden("creating Event failed", status=403, reason="forbidden"))
    r = rig(jobs=jobs)

    # When it fails
    with capture_logs() as logs:
        outcome = await r.handle([app_pod()], **{QUEUE: "Team A!"})

    # Then the outcome is written all the same, and the refused Event is logged
    assert outcome.write.written
    assert r.outcome() == "dead_letter default"
    assert jobs.events == []
    [failed] = [line for line in logs if line["event"] == "event_write_failed"]
    assert "403" in failed["error"]
    assert failed["log_level"] == "warning"


async def test_without_a_jobs_port_a_malformed_annotation_is_logged_and_counted_only() -> None:
    # Given a handler without access to the Jobs API (jobs=None)
    r = rig(jobs=None)

    # When a Job with a malformed annotation fails
    with capture_logs() as logs:
        outcome = await r.handle([app_pod()], **{QUEUE: "Team A!"})

    # Then the outcome is written, the annotation logged and counted, and no Event attempted
    assert outcome.write.written
    assert r.outcome() == "dead_letter default"
    events = [line["event"] for line in logs]
    assert events.count("policy_annotation_invalid") == 1
    assert "event_write_failed" not in events
    labels = {"source": "annotation"}
    assert r.metrics.registry.get_sample_value("kube_dlq_malformed_input_total", labels) == 1


# --- started or not ------------------------------------------------------------------------


def image_pull_pod() -> Raw:
    """Its image never pulled: the workload never started."""
    return raw_pod(phase="Pending", containers=[waiting(reason="ImagePullBackOff")])


STARTED = {
    "app_error after a run: started": (app_pod, "yes"),
    "node_lost, container killed: started": (lost_pod, "yes"),
    "image pull: never started": (image_pull_pod, "no"),
}


@pytest.mark.parametrize(("pod", "started"), STARTED.values(), ids=list(STARTED))
async def test_the_outcome_and_its_log_say_whether_the_workload_started(
    pod: Callable[[], Raw], started: str
) -> None:
    # Given a Job whose pod failed this way
    r = rig(jobs=FakeJobs())

    # When it is handled
    with capture_logs() as logs:
        outcome = await r.handle([pod()])

    # Then the stored outcome and its log line carry whether the workload started
    [stored] = [*r.store.tickets, *r.store.dead_letters]
    assert stored.started.value == started
    assert outcome.classification.started.value == started
    [line] = [e for e in logs if e["event"] in ("retry_scheduled", "dead_lettered")]
    assert line["started"] == started


# --- the OOM policy: more memory each retry, then the cap -------------------------------------

GIB = 2**30
OOM_POLICY = dataclasses.replace(
    RetryPolicy(), oom_memory=OomMemoryPolicy(factor=Fraction(3, 2), cap_bytes=2 * GIB, attempts=3)
)
TOKEN = "ab" * 16


def oom_pod() -> Raw:
    return raw_pod(containers=[terminated(exit_code=137, reason="OOMKilled")])


def with_memory(job: Raw, limit: str) -> Raw:
    [main] = job["spec"]["template"]["spec"]["containers"]
    main["resources"] = {"limits": {"memory": limit}, "requests": {"memory": limit}}
    return job


def retry_of(r: Rig, ticket: RetryTicket, n: int) -> Raw:
    """The Job the retry loop creates from `ticket`, failed, with kube-dlq's create record."""
    body = with_create_token(manifest_for_ticket(ticket), ticket_id=ticket.job.uid, token=TOKEN)
    body["metadata"]["uid"] = f"00000000-0000-4000-8000-00000000000{n}"
    body["status"] = raw_job()["status"]
    name = body["metadata"]["name"]
    lineage = Lineage(ticket.attempt, ticket.history)
    r.store.records[ticket.job.uid] = CreateRecord(NAMESPACE, name, TOKEN, "", lineage)
    return body


def limits_of(job: Raw) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]


async def test_oom_policy_raises_memory_each_retry_and_dead_letters_at_the_cap() -> None:
    # Given the OOM policy x1.5, capped at 2Gi, and a Job with 1Gi that is OOM-killed
    r = rig(OOM_POLICY, jobs=FakeJobs())
    job = with_memory(raw_job(), "1Gi")

    # When it fails, and each retry fails the same way
    first = await r.handler.handle(report(job, [oom_pod()]), job)
    second_job = retry_of(r, r.store.tickets[-1], 2)
    second = await r.handler.handle(report(second_job, [oom_pod()]), second_job)
    third_job = retry_of(r, r.store.tickets[-1], 3)
    third = await r.handler.handle(report(third_job, [oom_pod()]), third_job)

    # Then the first retry gets 1536Mi, the second the cap, and the third is dead-lettered
    assert [o.decision.action for o in (first, second, third)] == [
        Action.RETRY,
        Action.RETRY,
        Action.DEAD_LETTER,
    ]
    t1, t2 = r.store.tickets
    assert (limits_of(t1.manifest), limits_of(t2.manifest)) == ("1536Mi", "2Gi")
    assert limits_of(second_job) == "1536Mi"  # the retry Job is created with the new memory
    bump = "kube-dlq.io/memory-bump"
    assert second_job["metadata"]["annotations"][bump] == (
        "x1.5: main limits 1Gi -> 1536Mi, main requests 1Gi -> 1536Mi"
    )
    assert "with more memory (x1.5: main limits 1Gi -> 1536Mi" in t1.reason
    [letter] = r.store.dead_letters
    assert letter.reason.endswith("oom_killed: memory is at the cap of 2Gi; not retried")
    assert letter.reason.startswith("container main was OOM-killed")
    # And the history stored with the dead letter shows each bump
    assert [(h.attempt, h.memory) for h in letter.history] == [
        (1, "x1.5: main limits 1Gi -> 1536Mi, main requests 1Gi -> 1536Mi"),
        (2, "x1.5: main limits 1536Mi -> 2Gi, main requests 1536Mi -> 2Gi"),
        (3, ""),
    ]


async def test_without_the_oom_policy_an_oom_kill_is_dead_lettered_unchanged() -> None:
    r = rig(jobs=FakeJobs())
    job = with_memory(raw_job(), "1Gi")
    outcome = await r.handler.handle(report(job, [oom_pod()]), job)
    [letter] = r.store.dead_letters
    assert outcome.decision.reason == "oom_killed is not retried by policy"
    assert limits_of(letter.manifest) == "1Gi"
    assert "memory" not in letter.reason
    assert [h.memory for h in letter.history] == [""]


async def test_a_retry_for_another_class_drops_an_earlier_bump_annotation() -> None:
    # Given a retry Job that kube-dlq gave more memory, now lost with its node
    r = rig(OOM_POLICY, jobs=FakeJobs())
    job = with_memory(raw_job(), "1Gi")
    await r.handler.handle(report(job, [oom_pod()]), job)
    retry_job = retry_of(r, r.store.tickets[-1], 2)
    await r.handler.handle(report(retry_job, [lost_pod()]), retry_job)
    # Then its retry keeps the memory but does not claim a bump it did not make
    ticket = r.store.tickets[-1]
    assert limits_of(ticket.manifest) == "1536Mi"
    assert "kube-dlq.io/memory-bump" not in ticket.manifest["metadata"]["annotations"]


async def test_require_never_started_retries_only_a_job_that_never_ran() -> None:
    # Given image_pull and app_error retried only when the workload never started
    policy = RetryPolicy().with_classes(
        lambda fc, cp: (
            dataclasses.replace(cp, retry=True)
            if fc in (FailureClass.IMAGE_PULL, FailureClass.APP_ERROR)
            else cp
        )
    )
    never = frozenset({FailureClass.IMAGE_PULL, FailureClass.APP_ERROR})
    r = rig(dataclasses.replace(policy, require_never_started=never), jobs=FakeJobs())

    # When one Job never pulled its image and another ran and exited 2
    pulled = await r.handle([image_pull_pod()])
    ran = await r.handler.handle(report(raw_job(uid="other-uid"), [app_pod()]), raw_job())

    # Then only the one that never started is retried
    assert pulled.decision.action is Action.RETRY
    assert ran.decision.action is Action.DEAD_LETTER
    assert ran.decision.reason == (
        "app_error is retried only if the workload never started, and it did"
    )
