"""Why did a Job fail? `FailureReport` -> `Classification`, pure and deterministic.

Classification runs in two steps.

1. **Each pod** that did not succeed is run through `POD_RULES`, an ordered table of small
   functions `(pod, facts) -> Classification | None`; the first answer wins. The order goes from
   the most specific, most authoritative evidence to the most generic:

   1. `DisruptionTarget` condition: written by the component that killed the pod (taint
      manager, pod GC, kubelet, eviction API, scheduler), so it names the real cause even when
      the container also shows OOMKilled or exit 137 as a side effect of being killed.
   2. pod `status.reason` Evicted / Terminated / Shutdown / NodeShutdown (kubelet eviction and
      graceful node shutdown, which predate or accompany the condition). An Evicted pod whose
      message says "Pod was rejected" never ran: that is admission (6), not eviction.
   3. node state: the pod's node is gone, or NotReady and tainted unreachable/not-ready.
   4. legacy pod reason NodeLost.
   5. Events TaintManagerEviction, Preempted, Evicted, then NodeNotReady. Events come after
      status because they expire and are lossy; they rescue cases whose status is gone.
   6. admission rejection (UnexpectedAdmissionError, NodeAffinity, OutOf*, "Pod was rejected").
   7. OOMKilled container, or a node OOMKilling Event with a SIGKILLed container. After the
      disruption rules because a disrupted pod's containers can die of anything on the way out;
      before deadline and exit codes because OOMKilled is more specific than both.
   8. pod deadline (`activeDeadlineSeconds` on the pod).
   9. image pull, 10. container config errors and FailedMount, 11. I/O timeout text: causes that
      stop a container from starting or make it fail on the network, which are more specific
      than the exit code they end in. Config errors come before I/O timeouts because a
      timeout in a FailedMount message is the one config-looking signal that is transient.
   12. unschedulable: a pod that never got a node.
   13. app error: any non-zero exit code, signals decoded (137 = SIGKILL, 143 = SIGTERM).

   Node-state and NodeNotReady evidence is circumstantial (the node may have gone bad after the
   pod ended), so it is ignored when the kubelet reported the container's end: a plain
   application exit (1..128) or an OOM kill (a node flapping NotReady during an OOM kill is
   no node loss).
   Event evidence of start-up trouble (pull, mount, scheduling) is ignored once a container
   has run: it was transient, and what happened after is the better explanation.

2. **The Job**: the deciding pod is the most recent failed pod (by `created_at`) that has a
   class, so with `BackoffLimitExceeded` and pods that failed for different reasons the last
   failure speaks; failed or deleted pods come before pending or running ones, and when no
   pod object is left, the pods named by Events stand in for them. Then `JOB_RULES` combine
   it with the Job's Failed condition: `DeadlineExceeded` wins unless the pod's class ranks
   above deadlines in the order above (disruption, admission, OOM); `PodFailurePolicy` takes
   the pod's class, else app_error; any other case takes the pod's class, else unknown.

Every `Classification` has a one-line reason and evidence strings that name the object and the
signal, e.g. "pod p-1: DisruptionTarget reason=DeletionByTaintManager".

The modules split the rules by the evidence they read: `pods` (the pod's status), `containers`
(container statuses), `nodes` (the Node object and the Events a node reported) and `events` (the
pod's own Events). `jobs` holds both rule tables, the choice of the deciding pod and `classify`;
`patterns` the tunable `ClassifyRules`; `facts` and `evidence` what every rule shares.
"""

from __future__ import annotations

from watcher.core.classify.jobs import classify
from watcher.core.classify.patterns import (
    DEFAULT_IO_TIMEOUT_PATTERNS,
    DEFAULT_RULES,
    MAX_MATCHED_CHARS,
    ClassifyRules,
)

__all__ = [
    "DEFAULT_IO_TIMEOUT_PATTERNS",
    "DEFAULT_RULES",
    "MAX_MATCHED_CHARS",
    "ClassifyRules",
    "classify",
]
