"""What every peer consumer shares: its command line, the watched paths, the done line.

A peer lists and watches the replay server (the driver sees its watches open there, samples
its CPU time and lets the stream go) and prints ``{"done": ...}`` when it has read what it
was told to expect; then it idles until killed, so the driver reads its CPU time at the
moment it finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# The daemon's four watches (watcher.adapters.kube.watch), so every peer reads the same bytes.
PATHS = {
    "jobs": ("/apis/batch/v1/jobs", ""),
    "pods": ("/api/v1/pods", "batch.kubernetes.io/controller-uid"),
    "events": ("/api/v1/events", ""),
    "nodes": ("/api/v1/nodes", ""),
}


def arguments(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the replay server, http://127.0.0.1:PORT")
    parser.add_argument("--expect", type=int, required=True, help="watch events to read")
    parser.add_argument("--kubeconfig", help="for clients that read one")
    parser.add_argument("--redis-url", help="for peers that write outcomes")
    return parser.parse_args()


def say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()
