#!/usr/bin/env bash
# SayHello under h2load: the production hello-service against bare tonic (bench/src/bin/
# bare-hello.rs), side by side in one run, as ratios. Each server is pinned to core 0 and
# h2load to core 1 (taskset), warm-up then a measured run, in two shapes: 52 streams
# (4 connections x 13) and 1 stream. The run fails if hello-service answered any call with
# a code other than OK (read from its own grpc_server_handled_total); the streams h2load
# resets when its time is up are counted Canceled, and allowed.
#
#   bench/h2load.sh            (after `cargo build --release -p hello-service -p meshwork-bench`)
#   WARMUP=5 DURATION=10 bench/h2load.sh
#   HELLO_BIN=/path/to/older/hello-service bench/h2load.sh   (compare another build, same baseline)
set -euo pipefail
cd "$(dirname "$0")/.."

WARMUP=${WARMUP:-5}
DURATION=${DURATION:-10}
BIN=target/release
HELLO_BIN=${HELLO_BIN:-$BIN/hello-service}
# Codes a measured run may end with: the streams h2load resets at the end are Canceled (builds
# before 2026-12 counted them Unknown: ALLOWED_CODES='OK|Canceled|Unknown' to measure one).
ALLOWED_CODES=${ALLOWED_CODES:-OK|Canceled}
OUT=.bench/h2load
mkdir -p "$OUT"
if ! command -v h2load >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q nghttp2-client >/dev/null || true
fi
command -v h2load >/dev/null || { echo "h2load is missing: apt-get install nghttp2-client"; exit 1; }
PIN_SERVER=(taskset -c 0)
PIN_LOAD=(taskset -c 1)
[ "$(nproc)" -ge 2 ] || { PIN_SERVER=(); PIN_LOAD=(); }

# One SayHello{name: "bench"} as a gRPC frame: flag 0, length 7, then the message.
printf '\x00\x00\x00\x00\x07\x0a\x05bench' > "$OUT/say-hello.bin"

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# serve NAME PORT COMMAND...: starts a server pinned to core 0, waits until it listens.
serve() {
  local name=$1 port=$2; shift 2
  env LISTEN_ADDR=127.0.0.1:$port METRICS_ADDR=127.0.0.1:$((port + 1000)) "${PIN_SERVER[@]}" "$@" \
    >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$name did not start:"; cat "$OUT/$name.log"; exit 1
}

# measure NAME PORT CONNECTIONS STREAMS: prints "req/s p99_us".
measure() {
  local name=$1 port=$2 connections=$3 streams=$4
  local args=(-d "$OUT/say-hello.bin" -H 'content-type: application/grpc' -H 'te: trailers'
    -c "$connections" -m "$streams" -t 1 "http://127.0.0.1:$port/hello.v1.HelloService/SayHello")
  "${PIN_LOAD[@]}" h2load "${args[@]}" -D "$WARMUP" >/dev/null
  "${PIN_LOAD[@]}" h2load "${args[@]}" -D "$DURATION" --log-file="$OUT/$name-$streams.tsv" >"$OUT/$name-$streams.txt"
  local rps p99
  rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$OUT/$name-$streams.txt")
  # The log holds one line per request: start (µs), HTTP status, duration (µs).
  p99=$(awk '{ print $3 }' "$OUT/$name-$streams.tsv" | sort -n | awk '{ a[NR] = $1 } END { print a[int(NR * 0.99)] }')
  echo "$rps $p99"
}

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

declare -A result
run_server() { # NAME PORT COMMAND...
  local name=$1 port=$2; shift 2
  serve "$name" "$port" "$@"
  local pid=${pids[-1]}
  result[$name.idle_rss]=$(rss_kib "$pid")
  read -r result[$name.52] result[$name.52.p99] < <(measure "$name" "$port" 4 13)
  read -r result[$name.1] result[$name.1.p99] < <(measure "$name" "$port" 1 1)
  if [ "$name" != bare ]; then
    local bad
    bad=$(curl -s "http://127.0.0.1:$((port + 1000))/metrics" \
      | awk -v ok="grpc_code=\"($ALLOWED_CODES)\"" '/^grpc_server_handled_total/ && /SayHello/ && $0 !~ ok { s += $NF } END { print s + 0 }')
    [ "$bad" = 0 ] || { echo "$name answered $bad calls with a code other than OK"; exit 1; }
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

run_server bare 50061 "$BIN/bare-hello"
run_server hello 50071 "$HELLO_BIN"
run_server hello-warn 50081 env RUST_LOG=warn "$HELLO_BIN"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '| server | 52 streams req/s | 1 stream req/s | 1-stream p99 | idle RSS |\n|---|---:|---:|---:|---:|\n'
for name in bare hello hello-warn; do
  printf '| %s | %.0f (%sx) | %.0f (%sx) | %s µs (%sx) | %.1f MiB |\n' "$name" \
    "${result[$name.52]}" "$(ratio "${result[$name.52]}" "${result[bare.52]}")" \
    "${result[$name.1]}" "$(ratio "${result[$name.1]}" "${result[bare.1]}")" \
    "${result[$name.1.p99]}" "$(ratio "${result[$name.1.p99]}" "${result[bare.1.p99]}")" \
    "$(awk -v k="${result[$name.idle_rss]}" 'BEGIN { print k / 1024 }')"
done
