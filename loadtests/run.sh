#!/usr/bin/env bash
# `make load`: the mock upstream, the gateway and a headless, time-bounded locust run (with the drill).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
USERS=${USERS:-20}
DURATION=${DURATION:-20s}
state=$(mktemp -d)
mock_port=18900; gw_port=18901; admin_port=18902
token=load-commander-token
$BIN/containment mock-upstream --port $mock_port >/dev/null 2>&1 & mock=$!
CONTAINMENT_ADMIN_TOKENS="load:commander:$token" CONTAINMENT_SAMPLE_RATE=0 \
  $BIN/containment serve --upstream http://127.0.0.1:$mock_port --listen 127.0.0.1:$gw_port \
  --admin-listen 127.0.0.1:$admin_port --state-dir "$state" --log-level warning & gw=$!
trap 'kill $mock $gw 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$gw_port/_containment/readyz >/dev/null && break; sleep 0.1; done
CONTAINMENT_DRILL=1 CONTAINMENT_ADMIN_URL=http://127.0.0.1:$admin_port CONTAINMENT_TOKEN=$token \
  $BIN/locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:$gw_port \
  -u "$USERS" -r "$USERS" -t "$DURATION" --stop-timeout 5 --only-summary
