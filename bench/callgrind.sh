#!/usr/bin/env bash
# Instructions per SayHello under callgrind: counts, unlike seconds, repeat on a shared machine.
# A warm-up of 2,000 calls, counters zeroed, 20,000 calls (4 connections x 13 streams), dump.
#
#   cargo build --profile profiling --workspace --bins    (the services as the image builds them)
#   cargo build --profile profiling -p meshwork-bench     (bare tonic on its own: scripts/pgo.sh)
#   bench/callgrind.sh bare target/profiling/bare-hello
#   bench/callgrind.sh hello target/profiling/hello-service RUST_LOG=warn
#   callgrind_annotate --inclusive=yes .bench/callgrind/hello.*.out.1 | less   (where it goes)
# Another method: CALL_PATH=user.v1.UserService/GetUser CALL_BODY=FILE (a gRPC-framed request)
# and the server's own settings, e.g. DATABASE_URL=sqlite:///tmp/seeded.db.
# CreateOrder: USER_SERVICE=target/profiling/user-service starts a User service beside the
# counted order-service (natively, on a fresh SQLite file), creates one user (meshwork-bench
# seed, from the binary's directory) and orders for it: one item, no request_id, so every call
# stores an order and asks User. Seconds vary by tens of percent here; these counts do not.
#   USER_SERVICE=target/profiling/user-service CALLS=4000 bench/callgrind.sh order target/profiling/order-service
# SIM=1 simulates the caches and branch predictors too and prints every event per call (I1mr:
# instruction-cache misses, Bcm/Bim: mispredicted branches): equal instruction counts can still
# cost different cycles.
set -euo pipefail
cd "$(dirname "$0")/.."
# The image's allocator tunables (`GLIBC_TUNABLES= ` before the command: glibc's defaults).
. scripts/glibc-tunables.sh
[ $# -ge 2 ] || { echo "usage: $0 NAME BINARY [ENV=VALUE...]"; exit 2; }
name=$1 binary=$2; shift 2
CALLS=${CALLS:-20000}
out=.bench/callgrind
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind"; exit 1; }
command -v h2load >/dev/null || { echo "h2load is missing: apt-get install nghttp2-client"; exit 1; }
printf '\x00\x00\x00\x00\x07\x0a\x05bench' > "$out/say-hello.bin"
port=$((19000 + RANDOM % 500))
server_env=()
user_pid=
trap '[ -z "$user_pid" ] || kill "$user_pid" 2>/dev/null || true' EXIT
if [ -n "${USER_SERVICE:-}" ]; then
  user_port=$((port + 2))
  rm -f "$out/user.db"* "$out/order.db"*
  DATABASE_URL="sqlite://$out/user.db" LISTEN_ADDR=127.0.0.1:$user_port METRICS_ADDR=127.0.0.1:$((user_port + 1000)) \
    "$USER_SERVICE" >"$out/user.log" 2>&1 &
  user_pid=$!
  bench_bin="$(dirname "$binary")/meshwork-bench"
  "$bench_bin" ready --target "http://127.0.0.1:$user_port" --timeout 20s >/dev/null
  "$bench_bin" seed --target "http://127.0.0.1:$user_port" --users 1 --out "$out/user-id.txt" >/dev/null
  user_id=$(head -n1 "$out/user-id.txt")
  [ ${#user_id} = 36 ] || { echo "unexpected user id: $user_id"; exit 1; }
  # CreateOrderRequest{user_id, items: [{sku: "bench", quantity: 1, unit_price_cents: 100}]},
  # gRPC-framed: 51 bytes.
  { printf '\x00\x00\x00\x00\x33\x0a\x24%s' "$user_id"; printf '\x12\x0b\x0a\x05bench\x10\x01\x18\x64'; } >"$out/create-order.bin"
  CALL_PATH=${CALL_PATH:-order.v1.OrderService/CreateOrder}
  CALL_BODY=${CALL_BODY:-$out/create-order.bin}
  server_env=(USER_SERVICE_URL="http://127.0.0.1:$user_port" DATABASE_URL="sqlite://$out/order.db")
fi
# --fair-sched: otherwise the log writer thread starves and calls wait on its full queue.
env LISTEN_ADDR=127.0.0.1:$port METRICS_ADDR=127.0.0.1:$((port + 1000)) "${server_env[@]}" "$@" \
  valgrind --tool=callgrind --fair-sched=yes ${SIM:+--cache-sim=yes --branch-sim=yes} --callgrind-out-file="$out/$name.%p.out" "$binary" \
  >"$out/$name.log" 2>&1 &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true; [ -z "$user_pid" ] || kill "$user_pid" 2>/dev/null || true' EXIT
for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
args=(-d "${CALL_BODY:-$out/say-hello.bin}" -H 'content-type: application/grpc' -H 'te: trailers' -c 4 -m 13 -t 1
  "http://127.0.0.1:$port/${CALL_PATH:-hello.v1.HelloService/SayHello}")
h2load "${args[@]}" -n 2000 >/dev/null
callgrind_control -z "$pid" >/dev/null
h2load "${args[@]}" -n "$CALLS" | grep -E '^requests:'
callgrind_control -d "$pid" >/dev/null
for _ in $(seq 100); do grep -qs "^totals:" "$out/$name.$pid.out.1" && break; sleep 0.1; done
read -ra events < <(grep -m1 '^events:' "$out/$name.$pid.out.1" | cut -d' ' -f2-)
read -ra totals < <(grep -m1 '^summary:' "$out/$name.$pid.out.1" | cut -d' ' -f2-)
echo "$name: $((totals[0] / CALLS)) instructions per call ($out/$name.$pid.out.1)"
if [ "${#events[@]}" -gt 1 ]; then
  per_call=""
  for i in "${!events[@]}"; do per_call+=" ${events[$i]}=$((totals[i] / CALLS))"; done
  echo "$name, per call:$per_call"
fi
