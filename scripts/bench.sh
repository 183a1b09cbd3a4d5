#!/usr/bin/env bash
# `make bench`: release binaries on loopback, closed-loop load from meshwork-bench, one
# result line per scenario. Numbers are for this machine only; compare runs on one machine.
#
#   DURATION=10s CONCURRENCY=64 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-64}
BIN=target/release
OUT=.bench
mkdir -p "$OUT"
rm -rf "$OUT"/data-*
pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# start NAME BINARY PORT [ENV=VALUE...]: starts a service, waits for its "listening" line.
start() {
  local name=$1 binary=$2 port=$3; shift 3
  mkdir -p "$OUT/data-$name"
  env "$@" LISTEN_ADDR=127.0.0.1:$port METRICS_ADDR=127.0.0.1:0 \
    DATABASE_URL="sqlite://$OUT/data-$name/db.sqlite" \
    "$BIN/$binary" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    grep -q '"listening"\|listening' "$OUT/$name.log" && return 0
    sleep 0.05
  done
  echo "$name did not start:"; cat "$OUT/$name.log"; exit 1
}

load() { # LABEL TARGET RPC [more args]
  local label=$1 target=$2 rpc=$3; shift 3
  "$BIN/meshwork-bench" load --label "$label" --target "$target" --rpc "$rpc" \
    --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" "$@"
}

rss_mib() { # PID
  awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}

echo "# meshwork bench: $(nproc) cores, concurrency $CONCURRENCY, $DURATION per scenario (after $WARMUP warm-up)"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(rustc --version)"

# --- Hello: the cost of one RPC, with and without span export -------------------------
start hello hello-service 51051
echo "hello-service idle RSS: $(rss_mib "${pids[-1]}") MiB"
load "SayHello, tracing export off" http://127.0.0.1:51051 say-hello
echo "hello-service RSS after load: $(rss_mib "${pids[-1]}") MiB"

"$BIN/meshwork-bench" sink --listen 127.0.0.1:54317 2>"$OUT/sink.log" &
pids+=($!)
start hello-otel hello-service 51052 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:54317 OTEL_TRACES_SAMPLER=always_on
load "SayHello, export on (100% sampled)" http://127.0.0.1:51052 say-hello

# --- User and Order on SQLite -----------------------------------------------------------
start user user-service 51053
load "GetUser (SQLite)" http://127.0.0.1:51053 get-user
load "CreateUser (SQLite)" http://127.0.0.1:51053 create-user
start order order-service 51054 USER_SERVICE_URL=http://127.0.0.1:51053
load "CreateOrder (SQLite, 1 User)" http://127.0.0.1:51054 create-order --user-target http://127.0.0.1:51053
