#!/usr/bin/env bash
# End-to-end tests against a genuine kube-apiserver (v1.20.2) and etcd on loopback.
# Builds the API server once (cached under ~/.cache; needs root for apt), starts it on free
# ports, runs the ignored e2e tests, and stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash tests/e2e/build.sh >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export API_PORT="${API_PORT:-$(free_port)}" ETCD_PORT="${ETCD_PORT:-$(free_port)}" ETCD_PEER_PORT="${ETCD_PEER_PORT:-$(free_port)}"
export RUN_DIR="${RUN_DIR:-$(mktemp -d /tmp/herald-e2e.XXXXXX)}"
trap 'bash tests/e2e/start.sh stop; rm -rf "$RUN_DIR"' EXIT
eval "$(bash tests/e2e/start.sh)"
cargo test -p herald --test e2e --test e2e_controller -- --ignored --test-threads=1 "$@"
