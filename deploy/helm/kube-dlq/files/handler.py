#!/usr/bin/env python3
"""Example `kube-dlq dlq consume` handler: post a short summary of a dead letter to a webhook.

    kube-dlq dlq consume --group slack -- python3 deploy/consume/handler.py

Reads the entry (the JSON of `kube-dlq dlq show -o json`) on stdin and POSTs a Slack-compatible
message (``{"text": ..., "blocks": [...]}``; Slack incoming webhooks, Mattermost, Rocket.Chat
and most chat webhooks take it) to ``$KUBE_DLQ_WEBHOOK_URL``. Exit 0 when the webhook answers
2xx, so `dlq consume` acks; 1 otherwise, so it retries with backoff and parks the entry after
``--max-attempts``. Standard library only: it runs in the kube-dlq image as it is.

Delivery is at least once: a consumer killed between this script's exit and its ack runs it
again. The entry id is in the message and in the ``X-Kube-DLQ-Entry-Id`` header, so a receiver
that can deduplicate may; Slack itself does not.

Environment:
    KUBE_DLQ_WEBHOOK_URL      where to POST (required; keep it in a Secret: it is a credential)
    KUBE_DLQ_WEBHOOK_TIMEOUT  seconds for the whole request (default 10)
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

MAX_REASON = 300
"""Characters of the failure reason shown: a summary, `dlq show` has the rest."""


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The webhook body for one dead letter."""
    job = entry.get("job") or {}
    where = f"{job.get('namespace', '?')}/{job.get('name', '?')}"
    reason = " ".join(str(entry.get("reason", "")).split())
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    entry_id = str(entry.get("id", os.environ.get("KUBE_DLQ_ENTRY_ID", "?")))
    cls = entry.get("failure_class", "?")
    text = (
        f"Job {where} dead-lettered ({cls}) in queue {entry.get('queue', '?')} "
        f"on {entry.get('cluster', '?')} after {entry.get('attempts', '?')} attempt(s): {reason}"
    )
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{where}* `{cls}`\n{reason}"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"`kube-dlq dlq show {entry_id}` · queue {entry.get('queue', '?')}"
                        f" · cluster {entry.get('cluster', '?')} · {entry.get('failed_at', '?')}",
                    }
                ],
            },
        ],
    }


def post(url: str, body: dict[str, Any], *, entry_id: str, timeout_s: float) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Kube-DLQ-Entry-Id": entry_id},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return int(response.status)


def main() -> int:
    url = os.environ.get("KUBE_DLQ_WEBHOOK_URL", "")
    if not url.startswith(("https://", "http://")):
        print("handler: KUBE_DLQ_WEBHOOK_URL must be an http(s) URL", file=sys.stderr)
        return 1
    try:
        entry = json.load(sys.stdin)
        if not isinstance(entry, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        print(f"handler: stdin is not a dead-letter entry: {exc}", file=sys.stderr)
        return 1
    entry_id = os.environ.get("KUBE_DLQ_ENTRY_ID", str(entry.get("id", "")))
    try:
        timeout_s = float(os.environ.get("KUBE_DLQ_WEBHOOK_TIMEOUT", "10"))
        status = post(url, summary(entry), entry_id=entry_id, timeout_s=timeout_s)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # The URL is not printed: a webhook URL is a credential.
        print(
            f"handler: webhook POST for {entry_id} failed: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    if not 200 <= status < 300:
        print(f"handler: webhook answered {status} for {entry_id}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
