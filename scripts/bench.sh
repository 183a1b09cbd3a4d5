#!/usr/bin/env bash
# `make bench`: release binaries on loopback, closed-loop load from meshwork-bench, one
# result line per scenario. Load generator and services share this machine's cores, so
# compare numbers between runs on one machine, not across machines.
#
#   DURATION=10s CONCURRENCY=64 scripts/bench.sh
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/bench.sh  (default)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-64}
PG_ADMIN=${BENCH_POSTGRES_URL-postgres://postgres@127.0.0.1:5432/postgres}
BIN=target/release
OUT=.bench
mkdir -p "$OUT"
rm -rf "$OUT"/data-* "$OUT"/*.log
pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# start NAME BINARY PORT [ENV=VALUE...]: starts a service, waits until it listens.
# Services named alike share a data directory (user, user-2: one SQLite file).
start() {
  local name=$1 binary=$2 port=$3; shift 3
  local dir="$OUT/data-${name%-*}"
  mkdir -p "$dir"
  env DATABASE_URL="sqlite://$dir/db.sqlite" "$@" LISTEN_ADDR=127.0.0.1:$port METRICS_ADDR=127.0.0.1:0 \
    "$BIN/$binary" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  last_pid=$!
  for _ in $(seq 200); do
    grep -q 'listening' "$OUT/$name.log" && return 0
    sleep 0.05
  done
  echo "$name did not start:"; cat "$OUT/$name.log"; exit 1
}

load() { # LABEL TARGET RPC [more args]
  local label=$1 target=$2 rpc=$3; shift 3
  "$BIN/meshwork-bench" load --label "$label" --target "$target" --rpc "$rpc" \
    --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" "$@"
}

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

fresh_pg_db() { # NAME: creates a fresh database, prints its URL
  local db="meshwork_bench_$1"
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null 2>&1
  echo "${PG_ADMIN%/*}/$db"
}

echo "# meshwork bench: $(nproc) cores, concurrency $CONCURRENCY, $DURATION per scenario after $WARMUP warm-up"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(rustc --version)"

# --- Hello: the cost of one RPC, with and without span export ---------------------------
start hello hello-service 51051
echo "hello-service idle RSS: $(rss_mib "$last_pid") MiB"
load "SayHello, span export off" http://127.0.0.1:51051 say-hello
echo "hello-service RSS after load: $(rss_mib "$last_pid") MiB"

"$BIN/meshwork-bench" sink --listen 127.0.0.1:54317 2>"$OUT/sink.log" &
pids+=($!)
start hello-otel hello-service 51052 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:54317 OTEL_TRACES_SAMPLER=always_on
load "SayHello, span export on (100%)" http://127.0.0.1:51052 say-hello

# --- SQLite: User, and Order with one and two User instances -------------------------------
start user user-service 51053
load "GetUser (SQLite)" http://127.0.0.1:51053 get-user
load "CreateUser (SQLite)" http://127.0.0.1:51053 create-user
start order order-service 51054 USER_SERVICE_URL=http://127.0.0.1:51053
load "CreateOrder (SQLite, 1 User)" http://127.0.0.1:51054 create-order --user-target http://127.0.0.1:51053

start user-2 user-service 51055
user2_pid=$last_pid
start order-2 order-service 51056 USER_SERVICE_URL=http://127.0.0.1:51053,http://127.0.0.1:51055
load "CreateOrder (SQLite, 2 Users)" http://127.0.0.1:51056 create-order --user-target http://127.0.0.1:51053
( sleep 5; kill -KILL "$user2_pid" ) &
load "CreateOrder (2 Users, 1 killed at 5s)" http://127.0.0.1:51056 create-order --user-target http://127.0.0.1:51053

# --- PostgreSQL: one and two replicas ----------------------------------------------------------
if [ -n "$PG_ADMIN" ] && psql "$PG_ADMIN" -qc 'SELECT 1' >/dev/null 2>&1; then
  user_db=$(fresh_pg_db user); order_db=$(fresh_pg_db order)
  start user-pg user-service 51063 DATABASE_URL="$user_db"
  load "GetUser (PostgreSQL)" http://127.0.0.1:51063 get-user
  load "CreateUser (PostgreSQL)" http://127.0.0.1:51063 create-user
  start order-pg order-service 51064 DATABASE_URL="$order_db" USER_SERVICE_URL=http://127.0.0.1:51063
  load "CreateOrder (PostgreSQL)" http://127.0.0.1:51064 create-order --user-target http://127.0.0.1:51063
  start user-pg-2 user-service 51065 DATABASE_URL="$user_db"
  start order-pg-2 order-service 51066 DATABASE_URL="$order_db" \
    USER_SERVICE_URL=http://127.0.0.1:51063,http://127.0.0.1:51065
  load "GetUser (PostgreSQL, 2 replicas)" http://127.0.0.1:51063,http://127.0.0.1:51065 get-user
  load "CreateUser (PostgreSQL, 2 replicas)" http://127.0.0.1:51063,http://127.0.0.1:51065 create-user
  load "CreateOrder (PostgreSQL, 2+2 replicas)" http://127.0.0.1:51064,http://127.0.0.1:51066 create-order \
    --user-target http://127.0.0.1:51063
else
  echo "# PostgreSQL scenarios skipped: no server at BENCH_POSTGRES_URL"
fi
