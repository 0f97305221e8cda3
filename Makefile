# The two commands README.md starts with: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps demo test check pytest soak bench binaries manifests image image-test clean

deps:
	@scripts/install-deps.sh

## Run kube-dlq on an embedded default: local control plane + redis + a demo workload.
demo: deps
	$(PY) -m devtools demo

## The whole suite: lint, types, unit, integration (real redis) and cluster tests.
test: deps check pytest

check:
	$(VENV)/bin/ruff check watcher devtools tests bench
	$(VENV)/bin/ruff format --check watcher devtools tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

pytest:
	$(PY) -m watcher dev build
	$(PY) -m devtools.helmrender --check
	$(PY) -m pytest -p no:cacheprovider

## The fault suite's long runs (tests/faults, KUBE_DLQ_SOAK=1): each test prints its ledger.
## KUBE_DLQ_FAULT_SEED=<n> replays another fault schedule.
soak: deps
	$(PY) -m watcher dev build
	KUBE_DLQ_SOAK=1 $(PY) -m pytest -p no:cacheprovider tests/faults -s

## Benchmarks (docs/performance.md), each printing a table and writing JSON: throughput on one
## core against a bare consumer, kopf and client models (--check: bench/thresholds.json); the
## retry scheduler; latency, memory and cold start on the local control plane. Long: not in test.
bench: deps
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m watcher dev build
	$(PY) -m bench.throughput --copies 100 --check full
	$(PY) -m bench.scheduler --json /tmp/kube-dlq-bench-scheduler.json
	$(PY) -m bench.latency --json /tmp/kube-dlq-bench-latency.json
	$(PY) -m bench.memory --n 10000 --json /tmp/kube-dlq-bench-memory.json
	$(PY) -m bench.coldstart --n 10000 --json /tmp/kube-dlq-bench-coldstart.json

## Render deploy/manifests/ from the Helm chart (make test fails when they are out of date).
manifests: binaries
	$(PY) -m devtools.helmrender

## Build (once) the control-plane binaries into ~/.cache/kube-dlq.
binaries: deps
	$(PY) -m watcher dev build

## The container image without a container engine: buildah over a debootstrap base, proved
## as UID 65532 on a read-only root, archived to build/ (docs/image.md). Needs root.
image:
	scripts/build-image.sh

## Build the image and test it from outside (tests/image; minutes, so not part of `make test`).
image-test: deps
	KUBE_DLQ_IMAGE_TEST=1 $(PY) -m pytest -p no:cacheprovider tests/image -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
