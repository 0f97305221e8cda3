#!/usr/bin/env bash
# `make image`: build the Containerfile without a container engine, prove it, archive it.
#
#   1. buildah and debootstrap from Debian (apt-get) when missing;
#   2. a Debian bookworm minbase with python3, made once by debootstrap (no registry is
#      reachable here) and cached in ~/.cache/kube-dlq/image/;
#   3. `buildah bud --isolation chroot --build-arg BASE=<that base>` of the same Containerfile
#      Docker users build (chroot: the default OCI runtime cannot start containers in a VM
#      like this one);
#   4. the proof: the image's own ENTRYPOINT as UID 65532, with `--version` and `check-config`
#      on the embedded config, once through `buildah run` and once on a read-only root
#      (nothing mounted writable, as deploy/manifests/deployment.yaml runs it); a write must fail;
#   5. build/kube-dlq-<version>.oci.tar, and the sizes.
#
#   scripts/build-image.sh                     all of the above
#   scripts/build-image.sh --lock              regenerate requirements.lock (pip-compile)
#   scripts/build-image.sh --readonly IMAGE CMD...   run CMD in IMAGE on a read-only root
#                                              as 65532 (what step 4 uses; tests/image too)
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), KUBE_DLQ_IMAGE_CACHE,
# KUBE_DLQ_BUILD_CA (CA bundle pip trusts in the build; default the host's).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${KUBE_DLQ_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-dlq/image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_TAR=$CACHE/debian-bookworm-python3.tar
BASE_IMAGE=localhost/kube-dlq-base:bookworm-python3
RUN_UID=65532
PIP_TOOLS_VERSION=7.6.2
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=localhost/kube-dlq:$VERSION
ARCHIVE=build/kube-dlq-$VERSION.oci.tar
BUILDAH=(buildah --log-level=error)
BUILD_CA=${KUBE_DLQ_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}

say() { printf 'build-image: %s\n' "$*"; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

containers=()
cleanup() {
  local c
  for c in "${containers[@]}"; do "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

new_container() {  # NEW_CONTAINER: a working container of $1, removed on exit
  NEW_CONTAINER=$("${BUILDAH[@]}" from --pull-never "$1")
  containers+=("$NEW_CONTAINER")
}

# Run "$@" in image $1 the way Kubernetes runs it with readOnlyRootFilesystem: the image's
# root bind-mounted read-only, /dev and /proc as in a container, no writable path at all, the
# image's environment and UID 65532. A private mount namespace, so nothing outlives the call.
# Called in $(...) too, where the EXIT trap does not run: it removes its own container.
run_readonly() {
  local image=$1; shift
  local root env_lines rc=0
  new_container "$image"
  local c=$NEW_CONTAINER
  root=$("${BUILDAH[@]}" mount "$c")
  env_lines=$("${BUILDAH[@]}" inspect --type container \
    --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$c")
  local -a envs=()
  mapfile -t envs < <(sed '/^$/d' <<<"$env_lines")
  mkdir -p "$CACHE/ro-root"
  unshare --mount --propagation private -- bash -euc '
    root=$1 ro=$2 uid=$3 n=$4; shift 4
    envs=("${@:1:n}"); shift "$n"
    mount --bind "$root" "$ro"
    mount -o remount,bind,ro "$ro"
    mount --rbind /dev "$ro/dev"
    mount -t proc proc "$ro/proc"
    exec env -i "${envs[@]}" "$(command -v chroot)" --userspec="$uid:$uid" "$ro" "$@"
  ' bash "$root" "$CACHE/ro-root" "$RUN_UID" "${#envs[@]}" "${envs[@]}" "$@" || rc=$?
  "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true
  return "$rc"
}

install_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    die "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"
  fi
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

make_base() {
  if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base $BASE_IMAGE (cached)"
    return
  fi
  mkdir -p "$CACHE"
  if [ ! -f "$BASE_TAR" ]; then
    local rootfs=$CACHE/rootfs.$$ started=$SECONDS
    say "debootstrap bookworm minbase + python3 from $MIRROR (about 2 minutes, once)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed: see $CACHE/debootstrap.log"
    # The package cache is not part of an image; the lists come back with apt-get update.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$rootfs"
    say "debootstrap done in $((SECONDS - started)) s: $BASE_TAR"
  fi
  local c
  c=$("${BUILDAH[@]}" from scratch)
  containers+=("$c")
  "${BUILDAH[@]}" add "$c" "$BASE_TAR" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /usr/bin/python3 "$c"
  "${BUILDAH[@]}" commit -q "$c" "$BASE_IMAGE" >/dev/null
  say "base $BASE_IMAGE committed"
}

build() {
  local started=$SECONDS
  say "buildah bud --isolation chroot --build-arg BASE=$BASE_IMAGE -f Containerfile"
  # The host's CA bundle for pip in the builder (see the Containerfile: a proxy that
  # re-signs TLS is trusted here and must be trusted there). --layers: a rebuild with the
  # same lock reuses the dependency layers.
  local secret=()
  [ -s "$BUILD_CA" ] && secret=(--secret "id=pip-ca,src=$BUILD_CA")
  "${BUILDAH[@]}" bud --isolation chroot --pull-never --layers "${secret[@]}" \
    --build-arg "BASE=$BASE_IMAGE" -f Containerfile -t "$IMAGE" . >"$CACHE/bud.log" 2>&1 \
    || { tail -n 30 "$CACHE/bud.log" >&2; die "buildah bud failed: see $CACHE/bud.log"; }
  say "built $IMAGE in $((SECONDS - started)) s"
}

prove() {
  local entry c out
  mapfile -t entry < <("${BUILDAH[@]}" inspect --type image \
    --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
  [ ${#entry[@]} -gt 0 ] || die "$IMAGE has no ENTRYPOINT"
  local user
  user=$("${BUILDAH[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")
  [[ $user =~ ^$RUN_UID(:[0-9]+)?$ ]] || die "$IMAGE runs as '$user', not $RUN_UID"

  new_container "$IMAGE"
  c=$NEW_CONTAINER
  out=$("${BUILDAH[@]}" run --isolation chroot --user "$RUN_UID:$RUN_UID" "$c" -- \
    "${entry[@]}" --version)
  [ "$out" = "kube-dlq $VERSION" ] || die "--version said '$out', not 'kube-dlq $VERSION'"
  say "buildah run --user $RUN_UID: $out"

  out=$(run_readonly "$IMAGE" "${entry[@]}" --version)
  [ "$out" = "kube-dlq $VERSION" ] || die "read-only --version said '$out'"
  out=$(run_readonly "$IMAGE" "${entry[@]}" check-config /etc/kube-dlq/kube-dlq.yaml) \
    || die "check-config of the embedded config failed on a read-only root"
  say "read-only root, uid $RUN_UID: $out"
  if run_readonly "$IMAGE" /opt/kube-dlq/bin/python -c 'open("/probe", "w")' 2>/dev/null; then
    die "a write to / succeeded: the read-only proof proves nothing"
  fi
}

archive() {
  mkdir -p build
  rm -f "$ARCHIVE"
  "${BUILDAH[@]}" push -q "$IMAGE" "oci-archive:$ARCHIVE:kube-dlq:$VERSION" >/dev/null
  local size
  size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE")
  say "image $IMAGE: $size; archive $ARCHIVE: $(du -h "$ARCHIVE" | cut -f1)"
}

# requirements.lock, resolved by pip-compile in the Debian base: its Python (3.11.2) is the
# oldest the image runs on, and markers such as redis's `async-timeout; python_full_version <
# "3.11.3"` only show up when resolving there. (On the python:3.11 base an extra pin is merely
# unused.) The same CA bundle as the build, for a TLS-intercepting proxy.
lock() {
  make_base
  new_container "$BASE_IMAGE"
  local c=$NEW_CONTAINER
  say "pip-compile in $BASE_IMAGE -> requirements.lock"
  "${BUILDAH[@]}" run --isolation chroot -v "$PWD:/src" -v "$BUILD_CA:/etc/pip-ca.crt:ro" \
    "$c" -- sh -euc '
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3-venv >/dev/null
      python3 -m venv /tmp/pip-tools
      export PIP_CERT=/etc/pip-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1
      export CUSTOM_COMPILE_COMMAND="scripts/build-image.sh --lock"
      /tmp/pip-tools/bin/pip install -q "pip-tools==$1"
      cd /src
      /tmp/pip-tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
        --all-build-deps --strip-extras --no-emit-find-links --no-emit-index-url \
        --output-file requirements.lock pyproject.toml
    ' sh "$PIP_TOOLS_VERSION"
}

if [ "${1:-}" = "--lock" ]; then
  lock
  exit
fi
if [ "${1:-}" = "--readonly" ]; then
  shift
  [ $# -ge 2 ] || die "usage: $0 --readonly IMAGE CMD..."
  run_readonly "$@"
  exit
fi
[ "$(id -u)" -eq 0 ] || die "run as root (buildah's chroot isolation and debootstrap need it)"
total=$SECONDS
install_tools
make_base
build
prove
archive
say "done in $((SECONDS - total)) s"
