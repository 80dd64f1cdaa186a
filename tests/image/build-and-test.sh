#!/usr/bin/env bash
# Build Herald's container image (image/Containerfile, FROM scratch) from the one release build
# and smoke-test it with buildah, as CI does:
#
#   tests/image/build-and-test.sh [IMAGE_NAME]     default IMAGE_NAME: localhost/herald:ci
#
#   1. cargo build --release -p herald   (a no-op when it is built; the only release build)
#   2. image/stage.sh                    (the image's root filesystem, in target/image)
#   3. buildah bud                       (in a private vfs store under target/, removed after)
#   4. inside the image (buildah run --isolation chroot): `herald --version` names this
#      commit; `herald check` accepts examples/policies; `herald demo` plays the example
#      rollouts through the real server to a loopback capture server; `herald crd --dir`
#      into a mounted directory writes files owned by 65532 (the process is not root); all of
#      it with nothing else writable (read-only mounts over /tmp and /home/nonroot);
#      the image's configured user is 65532:65532, its size under MAX_MB (default 60).
#
# Needs root (buildah with --storage-driver vfs, chroot isolation); installs Debian's buildah
# when it is missing. Environment:
#   IMAGE_ARCHIVE=path   also write the image as an OCI archive (the release workflow pushes it)
#   HERALD_BIN=path      test this binary instead of building one (steps 1 is skipped)
#   STAGED=dir           a context image/stage.sh made already (step 2 is skipped)
#   VERSION, REVISION    what --version and the labels must say (default: Cargo's version,
#                        `git rev-parse --short HEAD`)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT_DIR="$PWD"
TARGET="${CARGO_TARGET_DIR:-$ROOT_DIR/target}"
IMAGE="${1:-localhost/herald:ci}"
MAX_MB="${MAX_MB:-60}"
t0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }
step() { echo "[image $(ms) ms] $*"; }
fail() { printf 'FAIL: %b\n' "$*" >&2; exit 1; }

if ! command -v buildah >/dev/null; then
  step "apt-get install buildah"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null
fi

if [ -n "${HERALD_BIN:-}" ]; then
  BIN="$HERALD_BIN"
else
  step "release binary (cargo build --release -p herald)"
  cargo build --release -q -p herald
  BIN="$TARGET/release/herald"
fi
[ -n "${VERSION:-}" ] || VERSION="$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "herald"))')"
[ -n "${REVISION:-}" ] || REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

if [ -n "${STAGED:-}" ]; then
  CONTEXT="$STAGED"
else
  step "stage the root filesystem"
  CONTEXT="$TARGET/image"
  bash image/stage.sh "$BIN" "$CONTEXT"
fi

# A private store: nothing of other buildah users on this machine is touched, and all of it
# goes when the test ends.
mkdir -p "$TARGET"
WORK="$(mktemp -d "$TARGET/image-test.XXXXXX")"
B=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
CTR=""
cleanup() {
  [ -n "$CTR" ] && "${B[@]}" rm "$CTR" >/dev/null 2>&1 || true
  "${B[@]}" rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$WORK" 2>/dev/null || { chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"; }
}
trap cleanup EXIT

step "buildah bud $IMAGE"
"${B[@]}" bud -q --layers=false \
  --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$IMAGE" -f "$CONTEXT/Containerfile" "$CONTEXT" >/dev/null

step "check the image's configuration"
"${B[@]}" inspect --type image "$IMAGE" >"$WORK/inspect.json"
"${B[@]}" push -q "$IMAGE" "oci:$WORK/oci:$IMAGE" >/dev/null
read -r user size_bytes gz_bytes < <(python3 tests/image/inspect.py "$WORK/inspect.json" "$WORK/oci" "$VERSION" "$REVISION" || echo FAIL)
[ "$user" = "65532:65532" ] || fail "the image's configuration (see above)"
size_mb="$(python3 -c "print(f'{$size_bytes / 1e6:.1f}')")"
gz_mb="$(python3 -c "print(f'{$gz_bytes / 1e6:.1f}')")"
echo "  image $IMAGE: $size_mb MB uncompressed, $gz_mb MB compressed (pulled); user $user; OCI labels ok"
python3 -c "import sys; sys.exit(0 if $size_bytes <= $MAX_MB * 1e6 else 1)" \
  || fail "the image is $size_mb MB, more than MAX_MB=$MAX_MB"
if [ -n "${IMAGE_ARCHIVE:-}" ]; then
  "${B[@]}" push -q "$IMAGE" "oci-archive:$IMAGE_ARCHIVE:$IMAGE" >/dev/null
  echo "image archive: $IMAGE_ARCHIVE ($(du -h "$IMAGE_ARCHIVE" | cut -f1))"
fi

CTR="$("${B[@]}" from -q "$IMAGE")"
# Read-only bind mounts of the examples; the one writable directory is the test's own.
POLICIES="$WORK/policies"
OUT="$WORK/out"
mkdir -p "$POLICIES" "$OUT"
chmod 0777 "$OUT"
chmod 0755 "$WORK"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
# The example Secrets point at the demo's capture port 9099: another port here, so a demo
# running elsewhere on this machine cannot collide with this one.
for f in examples/policies/*.yaml; do sed "s/127\.0\.0\.1:9099/127.0.0.1:$PORT/g; s/localhost:9099/localhost:$PORT/g" "$f" >"$POLICIES/$(basename "$f")"; done
chmod -R a+rX "$POLICIES"
# A read-only root filesystem, as the chart runs it: every file of the image belongs to root
# (not writable by 65532), and the two directories 65532 could write (/tmp, /home/nonroot)
# are covered by an empty read-only mount. The only writable place is /out.
EMPTY="$WORK/empty"
mkdir -p "$EMPTY"
MNT="$("${B[@]}" mount "$CTR")"
writable="$(cd "$MNT" && find . \( -user 65532 -o -perm -0002 \) ! -type l ! -path ./tmp ! -path ./home/nonroot | sort)"
"${B[@]}" umount "$CTR" >/dev/null
[ -z "$writable" ] || fail "files in the image that 65532 can write: $writable"
run() {
  "${B[@]}" run --isolation chroot --network host \
    -v "$EMPTY:/tmp:ro" -v "$EMPTY:/home/nonroot:ro" \
    -v "$POLICIES:/policies:ro" -v "$OUT:/out" "$CTR" -- /usr/local/bin/herald "$@"
}

step "herald --version"
out="$(run --version)"
echo "  $out"
[ "$out" = "herald $VERSION (commit $REVISION)" ] || fail "--version printed '$out', expected 'herald $VERSION (commit $REVISION)'"

step "herald check --policies /policies (examples/policies)"
out="$(run check --policies /policies)"
echo "  $(echo "$out" | tail -1)"
echo "$out" | tail -1 | grep -q '^ok: ' || fail "herald check: $out"

step "herald demo (the real server, a loopback capture server on port $PORT)"
out="$(run demo --capture-port "$PORT" --policies /policies 2>"$WORK/demo.log")" \
  || fail "herald demo failed: $out\n$(tail -20 "$WORK/demo.log")"
summary="$(echo "$out" | grep '^== What each receiver got' || true)"
echo "  $summary"
n="$(echo "$summary" | sed -n 's/.*(\([0-9]*\) notifications)/\1/p')"
[ -n "$n" ] && [ "$n" -ge 10 ] || fail "herald demo: expected at least 10 notifications; output:\n$out"
if echo "$out" | grep -E -- '-> [45][0-9][0-9] ' >/dev/null; then fail "herald demo: an event was refused:\n$out"; fi
echo "$out" | grep -q '^-- POST ' || fail "herald demo: no receiver got a POST"

step "the process runs as 65532 (files it writes into a mounted directory)"
run crd --dir /out >/dev/null
owners="$(stat -c '%u:%g' "$OUT"/*.yaml | sort -u)"
[ "$owners" = "65532:65532" ] || fail "files written inside the image belong to $owners, expected 65532:65532"
echo "  $(ls "$OUT" | wc -l) CRD files written by 65532:65532"

step "done: image $IMAGE, $size_mb MB; the image step took $(ms) ms"
