#!/usr/bin/env bash
# Install what kube-dlq's tests and demo need on a fresh Debian machine, idempotently:
# redis-server, openssl, prometheus (the server and promtool, for tests/monitoring) and
# graphviz (docs/architecture.svg) from Debian; in .venv the Python package with its dev and
# dashboards extras and the development tools (devtools/).
# Go (>= 1.26) must already be on PATH: it builds the local control plane.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v openssl >/dev/null || missing+=(openssl)
command -v promtool >/dev/null || missing+=(prometheus)
command -v dot >/dev/null || missing+=(graphviz)  # docs/architecture.svg (devtools/diagram.py)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-deps: missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
  echo "install-deps: no Go toolchain on PATH; Go >= 1.26 builds the local control plane" \
       "(or set KUBEBUILDER_ASSETS for etcd and kube-apiserver)" >&2
  exit 1
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The product with its dev and dashboards extras (dashboards: the library devtools/monitoring
# generates the Grafana dashboard with), and the development tools (devtools/, their own
# distribution: the local control plane and the demo are not in the product wheel).
stamp=.venv/.installed-$(cat pyproject.toml devtools/pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev,dashboards]' -e ./devtools
  rm -f .venv/.installed-* && touch "$stamp"
fi
