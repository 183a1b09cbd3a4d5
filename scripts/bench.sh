#!/usr/bin/env bash
# `make bench`, the mesh part: user-service and order-service (release builds, on loopback)
# share core 0 (taskset), the load generator `meshwork-bench` runs on core 1. 1,000 users are
# seeded first; then, on SQLite and (when a server answers at BENCH_POSTGRES_URL) on
# PostgreSQL: GetUser, ListUsers (page_size 50), CreateUser, CreateOrder (with its GetUser
# call to the User service), and WatchOrders fan-out (100 watchers of one user while orders
# for that user are created). Each scenario reports throughput, p50/p90/p99, the services'
# CPU seconds per 10k calls and their peak RSS, and is appended to $RESULTS/mesh.jsonl for
# `meshwork-bench report`. Then the issue's yardstick, in rounds: bare tonic's SayHello
# (bench/src/bin/bare-hello.rs) and GetUser, ListUsers and CreateOrder on a fresh pair of
# services, each measured in turn for DURATION/ROUNDS seconds, ROUNDS times, into
# $RESULTS/mesh-rounds.jsonl (the report pairs each with bare tonic's of the same round). Then
# the replica rows: CreateOrder over two User instances (one SIGKILLed half-way through), and
# PostgreSQL with two replicas of each service.
#
# A scenario fails the run if any of its calls was not OK (the load generator's own count),
# or if any service counted a code other than OK or Canceled in its grpc_server_handled_total.
#
#   scripts/bench.sh                          (after `make bench PGO=0`'s two builds)
#   BIN=target/pgo/release scripts/bench.sh   (after scripts/pgo.sh: what make bench runs)
#   WARMUP=1 DURATION=3 CONCURRENCY=32 scripts/bench.sh        (seconds)
#   ROUNDS=5 scripts/bench.sh                 (rounds against bare tonic; the default)
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/bench.sh  (default;
#   empty: no PostgreSQL rows)
set -euo pipefail
cd "$(dirname "$0")/.."
# The image's allocator tunables (`GLIBC_TUNABLES= ` before the command: glibc's defaults).
. scripts/glibc-tunables.sh

WARMUP=${WARMUP:-2}
DURATION=${DURATION:-10}
WARMUP=${WARMUP%s} DURATION=${DURATION%s}
[[ $WARMUP =~ ^[0-9]+$ && $DURATION =~ ^[0-9]+$ ]] || { echo "WARMUP and DURATION are whole seconds"; exit 2; }
ROUNDS=${ROUNDS:-5}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS is a whole number, at least 1"; exit 2; }
# Seconds of each window of the rounds: the measured time per scenario, shared among them.
WINDOW=$((DURATION / ROUNDS))
[ "$WINDOW" -ge 1 ] || WINDOW=1
CONCURRENCY=${CONCURRENCY:-64}
USERS=${USERS:-1000}
WATCHERS=${WATCHERS:-100}
# Orders per second in the fan-out: 200 x 100 watchers is 20,000 events/s, within what one
# core of this machine delivers, so the latency measured is delivery's, not a backlog's.
WATCH_RATE=${WATCH_RATE:-200}
PG_ADMIN=${BENCH_POSTGRES_URL-postgres://postgres@127.0.0.1:5432/postgres}
# The binaries: plain release builds by default; `make bench` passes its PGO build's folder.
BIN=${BIN:-target/release}
BENCH=$BIN/meshwork-bench
OUT=.bench/mesh
RESULTS=${RESULTS:-.bench/results}
rm -rf "$OUT"
mkdir -p "$OUT" "$RESULTS"
rm -f "$RESULTS/mesh.jsonl" "$RESULTS/mesh-rounds.jsonl"
PIN_SERVICES=(taskset -c 0)
PIN_LOAD=(taskset -c 1)
[ "$(nproc)" -ge 2 ] || { PIN_SERVICES=(); PIN_LOAD=(); }

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# The services running, by name: their pid and metrics port.
declare -A pid_of metrics_port_of

# start NAME BINARY PORT [ENV=VALUE...]: starts a service pinned to core 0, waits until its
# health says SERVING. The ports are below Linux's ephemeral range (32768 up), from which the
# clients' own ends of thousands of connections are taken: a port there may be in use. Services named alike share a data directory (user, user-2: one SQLite
# file). Its metrics port is PORT + 1000.
start() {
  local name=$1 binary=$2 port=$3; shift 3
  local dir="$OUT/data-${name%-*}"
  mkdir -p "$dir"
  env DATABASE_URL="sqlite://$dir/db.sqlite" "$@" LISTEN_ADDR=127.0.0.1:$port METRICS_ADDR=127.0.0.1:$((port + 1000)) \
    "${PIN_SERVICES[@]}" "$BIN/$binary" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  pid_of[$name]=$!
  metrics_port_of[$name]=$((port + 1000))
  "$BENCH" ready --target "http://127.0.0.1:$port" --timeout 20s \
    || { echo "$name did not start:"; cat "$OUT/$name.log"; exit 1; }
}

# check_codes: every running service answered every call OK (or Canceled: a client that let
# go, as the fan-out's watchers do at the end); fails the run otherwise.
check_codes() {
  local name bad
  for name in "${!metrics_port_of[@]}"; do
    bad=$(curl -sf "http://127.0.0.1:${metrics_port_of[$name]}/metrics" \
      | awk '/^grpc_server_handled_total/ && $0 !~ /grpc_code="(OK|Canceled)"/ { s += $NF } END { print s + 0 }')
    [ "$bad" = 0 ] || { echo "$name answered $bad calls with a code other than OK:"; \
      curl -s "http://127.0.0.1:${metrics_port_of[$name]}/metrics" | grep '^grpc_server_handled_total' | grep -v 'grpc_code="OK"'; exit 1; }
  done
}

# watched NAME,NAME...: the --pid arguments, one a line, charging a scenario's CPU and memory
# to those services.
watched() {
  local names name
  IFS=, read -ra names <<<"$1"
  for name in "${names[@]}"; do printf -- '--pid\n%s=%s\n' "$name" "${pid_of[$name]}"; done
}

# load BACKEND SCENARIO RPC TARGET SERVICES [more load args]: one closed-loop scenario.
# SERVICES is a comma-separated list of the services it is charged to. A round's window sets
# LOAD_DURATION, LOAD_WARMUP and LOAD_RESULTS (default: DURATION, WARMUP, mesh.jsonl).
load() {
  local backend=$1 scenario=$2 rpc=$3 target=$4 services=$5; shift 5
  local pid_args; mapfile -t pid_args < <(watched "$services")
  "${PIN_LOAD[@]}" "$BENCH" load --scenario "$scenario" --backend "$backend" --rpc "$rpc" --target "$target" \
    --concurrency "$CONCURRENCY" --duration "${LOAD_DURATION:-$DURATION}s" --warmup "${LOAD_WARMUP:-$WARMUP}s" \
    --results "${LOAD_RESULTS:-$RESULTS/mesh.jsonl}" "${pid_args[@]}" "$@"
  check_codes
}

# fan_out BACKEND ORDER_TARGET USERS_FILE SERVICES: the WatchOrders fan-out scenario.
fan_out() {
  local backend=$1 target=$2 users=$3 services=$4
  local pid_args; mapfile -t pid_args < <(watched "$services")
  "${PIN_LOAD[@]}" "$BENCH" watch --scenario "WatchOrders fan-out" --backend "$backend" --target "$target" \
    --users "$users" --watchers "$WATCHERS" --rate "$WATCH_RATE" --duration "${DURATION}s" --warmup "${WARMUP}s" \
    --results "$RESULTS/mesh.jsonl" "${pid_args[@]}"
  check_codes
}

# scenarios BACKEND USER_PORT ORDER_PORT USER_NAME ORDER_NAME: seeds the users, then runs the
# five scenarios against that pair of services. ListUsers runs before CreateUser, so that it
# pages through exactly the seeded users.
scenarios() {
  local backend=$1 user=http://127.0.0.1:$2 order=http://127.0.0.1:$3 both=$4,$5
  local users="$OUT/users-${4}.txt"
  "${PIN_LOAD[@]}" "$BENCH" seed --target "$user" --users "$USERS" --out "$users"
  load "$backend" GetUser get-user "$user" "$both" --users "$users"
  load "$backend" "ListUsers (page_size 50)" list-users "$user" "$both" --page-size 50
  load "$backend" CreateUser create-user "$user" "$both"
  load "$backend" "CreateOrder (+ its GetUser)" create-order "$order" "$both" --users "$users"
  fan_out "$backend" "$order" "$users" "$both"
}

fresh_pg_db() { # NAME: creates a fresh database, prints its URL
  local db="meshwork_bench_$1"
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null 2>&1
  echo "${PG_ADMIN%/*}/$db"
}

echo "# meshwork bench: $(nproc) cores, $CONCURRENCY calls in flight, ${DURATION}s per scenario after ${WARMUP}s of warm-up"

# --- SQLite: one User and one Order -------------------------------------------------------
start user user-service 23053
start order order-service 23054 USER_SERVICE_URL=http://127.0.0.1:23053
scenarios SQLite 23053 23054 user order

# --- The yardstick, in rounds: bare tonic's SayHello and the mesh, one after another ---------
# A fresh User and Order (1,000 users, as above), and bare tonic beside them on core 0; all
# called by meshwork-bench with the same calls in flight, so that a ratio compares servers,
# not load generators, measured seconds apart.
LISTEN_ADDR=127.0.0.1:23090 "${PIN_SERVICES[@]}" "$BIN/bare-hello" >"$OUT/bare.log" 2>&1 &
pids+=($!)
pid_of[bare]=$!
"$BENCH" ready --target http://127.0.0.1:23090 --probe say-hello --timeout 20s \
  || { echo "bare tonic did not start:"; cat "$OUT/bare.log"; exit 1; }
start ruser user-service 23091
start rorder order-service 23092 USER_SERVICE_URL=http://127.0.0.1:23091
"${PIN_LOAD[@]}" "$BENCH" seed --target http://127.0.0.1:23091 --users "$USERS" --out "$OUT/users-ruser.txt"
round_scenarios=(bare get-user list-users create-order)
for round in $(seq "$ROUNDS"); do
  for i in "${!round_scenarios[@]}"; do
    case ${round_scenarios[$(((i + round - 1) % ${#round_scenarios[@]}))]} in
      bare) target=http://127.0.0.1:23090 services=bare rpc=say-hello scenario="bare tonic SayHello" extra=() backend=– ;;
      get-user) target=http://127.0.0.1:23091 services=ruser,rorder rpc=get-user scenario=GetUser backend=SQLite
        extra=(--users "$OUT/users-ruser.txt") ;;
      list-users) target=http://127.0.0.1:23091 services=ruser,rorder rpc=list-users scenario="ListUsers (page_size 50)"
        backend=SQLite extra=(--page-size 50) ;;
      create-order) target=http://127.0.0.1:23092 services=ruser,rorder rpc=create-order scenario="CreateOrder (+ its GetUser)"
        backend=SQLite extra=(--users "$OUT/users-ruser.txt") ;;
    esac
    LOAD_DURATION=$WINDOW LOAD_WARMUP=1 LOAD_RESULTS="$RESULTS/mesh-rounds.jsonl" \
      load "$backend" "$scenario" "$rpc" "$target" "$services" --round "$round" "${extra[@]}"
  done
done
# Disowned, so that bash does not report bare tonic (which has no SIGTERM handler) as killed.
disown "${pid_of[bare]}"
kill -TERM "${pid_of[bare]}" "${pid_of[ruser]}" "${pid_of[rorder]}" 2>/dev/null || true
unset 'metrics_port_of[ruser]' 'metrics_port_of[rorder]'

# --- SQLite: Order over two User instances, then one of them SIGKILLed half-way ------------
start user-2 user-service 23055
start order-2 order-service 23056 USER_SERVICE_URL=http://127.0.0.1:23053,http://127.0.0.1:23055
load "SQLite, 2 Users" "CreateOrder (+ its GetUser)" create-order http://127.0.0.1:23056 \
  user,user-2,order-2 --users "$OUT/users-user.txt"
kill_at=$((WARMUP + DURATION / 2))
# Disowned, so that bash does not report the killed job in the middle of the results.
disown "${pid_of[user-2]}"
( sleep "$kill_at"; kill -KILL "${pid_of[user-2]}" ) &
pids+=($!)
# user-2 is not charged: it is gone before the window ends.
unset 'metrics_port_of[user-2]'
load "SQLite, 2 Users, 1 killed at ${kill_at}s" "CreateOrder (+ its GetUser)" create-order \
  http://127.0.0.1:23056 user,order-2 --users "$OUT/users-user.txt"

# --- PostgreSQL: one replica of each, then two ----------------------------------------------
if [ -n "$PG_ADMIN" ] && psql "$PG_ADMIN" -qc 'SELECT 1' >/dev/null 2>&1; then
  user_db=$(fresh_pg_db user); order_db=$(fresh_pg_db order)
  start user-pg user-service 23063 DATABASE_URL="$user_db"
  start order-pg order-service 23064 DATABASE_URL="$order_db" USER_SERVICE_URL=http://127.0.0.1:23063
  scenarios PostgreSQL 23063 23064 user-pg order-pg

  start user-pg-2 user-service 23065 DATABASE_URL="$user_db"
  start order-pg-2 order-service 23066 DATABASE_URL="$order_db" \
    USER_SERVICE_URL=http://127.0.0.1:23063,http://127.0.0.1:23065
  all_pg=user-pg,user-pg-2,order-pg,order-pg-2
  load "PostgreSQL, 2 replicas" GetUser get-user http://127.0.0.1:23063,http://127.0.0.1:23065 "$all_pg" \
    --users "$OUT/users-user-pg.txt"
  load "PostgreSQL, 2 replicas" CreateUser create-user http://127.0.0.1:23063,http://127.0.0.1:23065 "$all_pg"
  load "PostgreSQL, 2+2 replicas" "CreateOrder (+ its GetUser)" create-order \
    http://127.0.0.1:23064,http://127.0.0.1:23066 "$all_pg" --users "$OUT/users-user-pg.txt"
else
  echo "# PostgreSQL scenarios skipped: no server at BENCH_POSTGRES_URL"
fi

echo
"$BENCH" report --results "$RESULTS" --print mesh
