#!/usr/bin/env bash
# End-to-end tests against a genuine kube-apiserver (v1.20.2) and etcd on loopback.
# Builds the API server once (cached under ~/.cache; needs root for apt), starts it on free
# ports, runs the suites, and stops it:
#
#   1. crates/herald/tests/e2e.rs, e2e_controller.rs, e2e_gates.rs and e2e_alerts.rs: the controller in process, and
#      e2e_durable.rs: the binary killed with kill -9 (`cargo test --ignored`);
#   2. tests/e2e/chart: Herald as the Helm chart installs it (pytest, on a fresh API server with
#      an audit log): the chart rendered with Helm's engine, its objects applied, the release
#      binary run with the rendered Deployment's args and env as the chart's ServiceAccount.
#
#   run.sh [ARGS]                  both suites; ARGS go to the Rust test binary
#   run.sh --rust-only [ARGS]      only the first
#   run.sh --chart-only [ARGS]     only the second; ARGS go to pytest, e.g. -k paused_leader
#
# HERALD_BIN: the herald binary for the chart suite (default: cargo build --release -p herald).
# The chart suite's logs stay in $CARGO_TARGET_DIR/e2e-chart, its measurements are written to
# $CARGO_TARGET_DIR/e2e-measurements.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."

MODE=all
case "${1:-}" in
  --rust-only | --chart-only) MODE="${1#--}"; shift ;;
esac

bash tests/e2e/build.sh >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export API_PORT="${API_PORT:-$(free_port)}" ETCD_PORT="${ETCD_PORT:-$(free_port)}" ETCD_PEER_PORT="${ETCD_PEER_PORT:-$(free_port)}"
export RUN_DIR="${RUN_DIR:-$(mktemp -d /tmp/herald-e2e.XXXXXX)}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CHART_DIR="$TARGET/e2e-chart"
trap 'bash tests/e2e/start.sh stop; [ -d "$CHART_DIR" ] && cp "$RUN_DIR/kube-apiserver.log" "$CHART_DIR/" 2>/dev/null; rm -rf "$RUN_DIR"' EXIT

status=0
if [ "$MODE" != chart-only ]; then
  eval "$(bash tests/e2e/start.sh)"
  cargo test -p herald --test e2e --test e2e_controller --test e2e_durable --test e2e_gates --test e2e_alerts -- --ignored --test-threads=1 "$@" || status=$?
fi

if [ "$MODE" != rust-only ]; then
  [ "$MODE" = chart-only ] || set --
  echo "== end-to-end: the Helm chart as users install it (tests/e2e/chart)"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  VENV="$TARGET/e2e-venv"
  REQ=tests/e2e/chart/requirements.txt
  if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    cp "$REQ" "$VENV/requirements.txt"
  fi
  if [ -z "${HERALD_BIN:-}" ]; then
    cargo build -q --release -p herald
    export HERALD_BIN="$TARGET/release/herald"
  fi
  rm -rf "$CHART_DIR"
  mkdir -p "$CHART_DIR"
  # A fresh API server (nothing left by the first suite), with an audit log to count Herald's
  # requests by its ServiceAccount's user.
  export AUDIT_LOG="$CHART_DIR/kube-apiserver-audit.log"
  eval "$(bash tests/e2e/start.sh)"
  export CARGO_TARGET_DIR="$TARGET" HERALD_E2E_DIR="$CHART_DIR"
  "$VENV/bin/python" -m pytest tests/e2e/chart -v -s -p no:cacheprovider --durations=0 "$@" || status=$?
fi
exit "$status"
