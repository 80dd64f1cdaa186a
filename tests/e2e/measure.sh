#!/usr/bin/env bash
# Measures `herald controller` (the release binary) at scale against a real kube-apiserver:
# RSS with 10,000 Canaries, API requests per minute idle and per 1,000 Events, state bytes per
# canary. Not part of CI (creating the Canaries takes minutes). Writes
# target/controller-measurements.txt; BENCHMARKS.md keeps the figures.
#   HERALD_MEASURE_CANARIES=N tests/e2e/measure.sh      (default 10000)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/e2e/build.sh >/dev/null
cargo build --release -p herald
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export API_PORT="$(free_port)" ETCD_PORT="$(free_port)" ETCD_PEER_PORT="$(free_port)"
export RUN_DIR="$(mktemp -d /tmp/herald-measure.XXXXXX)"
trap 'bash tests/e2e/start.sh stop; rm -rf "$RUN_DIR"' EXIT
eval "$(bash tests/e2e/start.sh)"
cargo test -p herald --test e2e_measure -- --ignored --nocapture
cat target/controller-measurements.txt
