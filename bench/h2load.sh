#!/usr/bin/env bash
# SayHello under h2load: the production hello-service against bare tonic (bench/src/bin/
# bare-hello.rs), side by side in one run, as ratios. Each server is pinned to core 0 and
# h2load to core 1 (taskset), in two shapes: 52 streams (4 connections x 13) and 1 stream.
# Rows: bare tonic; hello-service as configured by default (access log at info); with
# RUST_LOG=warn; with every span sampled and exported to a local OTLP/gRPC receiver
# (`meshwork-bench sink`, on core 1 with h2load); bare tonic on the single-threaded scheduler,
# which the services pick on one CPU (a reference row). For each: req/s, CPU per call, the 1-stream
# p99, idle RSS, and start-to-SERVING (`meshwork-bench startup`).
#
# Rounds, because this machine's speed drifts by tens of percent within minutes: all four
# servers run at once (each idle while another is measured), each is warmed up once, then
# ROUNDS times every server is measured in turn for DURATION/ROUNDS seconds per shape (the
# order rotating each round). `meshwork-bench report` pairs each window with bare tonic's in
# the same round and reports the median of those ratios with their spread.
#
# The run fails if hello-service answered any call with a code other than OK (read from its
# own grpc_server_handled_total); the streams h2load resets when its time is up are counted
# Canceled, and allowed. With export on, it also fails if the sink received no span.
#
# Each row is appended to $RESULTS/sayhello.jsonl for `meshwork-bench report`.
#
#   bench/h2load.sh            (after `make bench PGO=0`'s two builds: the services, then
#                               meshwork-bench on its own; scripts/pgo.sh says why)
#   BIN=target/pgo/release bench/h2load.sh   (after scripts/pgo.sh: what make bench runs)
#   WARMUP=1 DURATION=3 bench/h2load.sh      (seconds: warm-up per server, measured per shape)
#   ROUNDS=1 bench/h2load.sh                 (one window per server and shape, as before rounds)
#   HELLO_BIN=/path/to/older/hello-service bench/h2load.sh   (compare another build, same baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
# The image's allocator tunables (`GLIBC_TUNABLES= ` before the command: glibc's defaults).
. scripts/glibc-tunables.sh

WARMUP=${WARMUP:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP%s} DURATION=${DURATION%s}
ROUNDS=${ROUNDS:-5}
[[ $WARMUP =~ ^[0-9]+$ && $DURATION =~ ^[0-9]+$ ]] || { echo "WARMUP and DURATION are whole seconds"; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS is a whole number, at least 1"; exit 2; }
# Seconds of each measured window: the measured time per shape, shared among the rounds.
WINDOW=$((DURATION / ROUNDS))
[ "$WINDOW" -ge 1 ] || WINDOW=1
# The binaries: plain release builds by default; `make bench` passes its PGO build's folder.
BIN=${BIN:-target/release}
BENCH=$BIN/meshwork-bench
HELLO_BIN=${HELLO_BIN:-$BIN/hello-service}
# Codes a measured run may end with: the streams h2load resets at the end are Canceled (builds
# before 2026-12 counted them Unknown: ALLOWED_CODES='OK|Canceled|Unknown' to measure one).
ALLOWED_CODES=${ALLOWED_CODES:-OK|Canceled}
OUT=.bench/h2load
RESULTS=${RESULTS:-.bench/results}
SINK_ADDR=127.0.0.1:20317
mkdir -p "$OUT" "$RESULTS"
rm -f "$RESULTS/sayhello.jsonl"
: >"$OUT/sink.log"
if ! command -v h2load >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q nghttp2-client >/dev/null || true
fi
command -v h2load >/dev/null || { echo "h2load is missing: apt-get install nghttp2-client"; exit 1; }
[ -x "$BENCH" ] || { echo "$BENCH is missing: cargo build --release -p meshwork-bench (or scripts/pgo.sh with BIN=target/pgo/release)"; exit 1; }
PIN_SERVER=(taskset -c 0)
PIN_LOAD=(taskset -c 1)
[ "$(nproc)" -ge 2 ] || { PIN_SERVER=(); PIN_LOAD=(); }

# One SayHello{name: "bench"} as a gRPC frame: flag 0, length 7, then the message.
printf '\x00\x00\x00\x00\x07\x0a\x05bench' > "$OUT/say-hello.bin"

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# serve NAME PORT PROBE COMMAND...: starts a server pinned to core 0, waits until it is ready.
serve() {
  local name=$1 port=$2 probe=$3; shift 3
  "${PIN_SERVER[@]}" "$@" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  "$BENCH" ready --target "http://127.0.0.1:$port" --probe "$probe" --timeout 10s \
    || { echo "$name did not start:"; cat "$OUT/$name.log"; exit 1; }
}

# cpu_ticks PID: the process's utime + stime, every thread, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# h2load_args PORT CONNECTIONS STREAMS: h2load's arguments for SayHello on that port.
h2load_args() {
  printf '%s\n' -d "$OUT/say-hello.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    -c "$2" -m "$3" -t 1 "http://127.0.0.1:$1/hello.v1.HelloService/SayHello"
}

# warm_up PORT: WARMUP seconds of 52 streams, not measured.
warm_up() {
  local args; mapfile -t args < <(h2load_args "$1" 4 13)
  "${PIN_LOAD[@]}" h2load "${args[@]}" -D "$WARMUP" >/dev/null
}

# measure NAME PORT CONNECTIONS STREAMS PID ROUND: one window of WINDOW seconds; prints
# "req/s p99_us cpu_us_per_call".
measure() {
  local name=$1 port=$2 connections=$3 streams=$4 pid=$5 round=$6
  local args; mapfile -t args < <(h2load_args "$port" "$connections" "$streams")
  local base="$OUT/$name-$streams-r$round"
  local ticks_before; ticks_before=$(cpu_ticks "$pid")
  "${PIN_LOAD[@]}" h2load "${args[@]}" -D "$WINDOW" --log-file="$base.tsv" >"$base.txt"
  local ticks=$(($(cpu_ticks "$pid") - ticks_before))
  local rps p99 calls cpu_us
  rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$base.txt")
  calls=$(awk '/^requests:/ { print $8 }' "$base.txt")
  cpu_us=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="${calls:-0}" 'BEGIN { printf "%.2f", (n > 0 ? t * 1e6 / hz / n : 0) }')
  # The log holds one line per request: start (µs), HTTP status, duration (µs).
  p99=$(awk '{ print $3 }' "$base.tsv" | sort -n | awk '{ a[NR] = $1 } END { print a[int(NR * 0.99)] }')
  rm -f "$base.tsv"
  [ -n "$rps" ] && [ -n "$p99" ] || { echo "h2load gave no result for $name:"; cat "$base.txt"; exit 1; }
  echo "$rps $p99 $cpu_us"
}

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

# handled METRICS_PORT FILTER: the sum of SayHello's grpc_server_handled_total whose line
# matches the awk expression FILTER (over the line, $0).
handled() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk "/^grpc_server_handled_total/ && /SayHello/ && ($2) { s += \$NF } END { print s + 0 }"
}

# sink_total: the spans the sink has received so far (its last report).
sink_total() { awk '{ n = $3 } END { print n + 0 }' "$OUT/sink.log"; }

# sink_settled_total: the sink's total once it has stopped growing (bounded: 15 s).
sink_settled_total() {
  local last=-1 now
  for _ in $(seq 50); do
    now=$(sink_total)
    [ "$now" = "$last" ] && break
    last=$now
    sleep 0.3
  done
  echo "$now"
}

# start_sink: the OTLP/gRPC receiver, on core 1 with h2load, once it accepts connections.
start_sink() {
  "${PIN_LOAD[@]}" "$BENCH" sink --listen "$SINK_ADDR" 2>"$OUT/sink.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    # Ours must be the one listening: another process on the port would take the spans.
    kill -0 "$pid" 2>/dev/null || break
    (exec 3<>"/dev/tcp/${SINK_ADDR%:*}/${SINK_ADDR#*:}") 2>/dev/null && kill -0 "$pid" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "the OTLP sink did not start:"; cat "$OUT/sink.log"; exit 1
}

# The servers, in the table's order. define NAME LABEL PORT PROBE COMMAND... records one.
# Ports below Linux's ephemeral range (32768 up), where h2load's own connection ends are.
servers=()
declare -A label_of port_of probe_of command_of pid_of ready_ms_of idle_rss_of
define() {
  local name=$1
  servers+=("$name")
  label_of[$name]=$2 port_of[$name]=$3 probe_of[$name]=$4
  shift 4
  command_of[$name]="env LISTEN_ADDR=127.0.0.1:${port_of[$name]} METRICS_ADDR=127.0.0.1:$((port_of[$name] + 1000)) $(printf '%q ' "$@")"
}
define bare "bare tonic (baseline)" 20061 say-hello "$BIN/bare-hello"
define hello "hello-service (access log at info)" 20071 health "$HELLO_BIN"
define hello-warn "hello-service, RUST_LOG=warn" 20081 health env RUST_LOG=warn "$HELLO_BIN"
define hello-otel "hello-service, span export on (always_on)" 20091 health \
  env OTEL_EXPORTER_OTLP_ENDPOINT="http://$SINK_ADDR" OTEL_TRACES_SAMPLER=always_on "$HELLO_BIN"
# For reference, not a target: bare tonic on the scheduler the services choose on one CPU
# (tokio's single-threaded one; the baseline keeps `#[tokio::main]`'s, as bare tonic has it),
# so that the table shows what the scheduler is worth and what the stack costs on top of it.
define bare-1 "bare tonic, single-threaded scheduler (reference)" 20101 say-hello env WORKER_THREADS=1 "$BIN/bare-hello"

# 1. Start-up, each server alone: median of 5 starts to SERVING.
start_sink
for name in "${servers[@]}"; do
  eval "command=(${command_of[$name]})"
  ready_ms_of[$name]=$("$BENCH" startup --target "http://127.0.0.1:${port_of[$name]}" --probe "${probe_of[$name]}" \
    --runs 5 -- "${PIN_SERVER[@]}" "${command[@]}")
done
spans_before=$(sink_total)

# 2. All of them started, idle RSS read before any call, then each warmed up.
for name in "${servers[@]}"; do
  eval "command=(${command_of[$name]})"
  serve "$name" "${port_of[$name]}" "${probe_of[$name]}" "${command[@]}"
  pid_of[$name]=${pids[-1]}
  idle_rss_of[$name]=$(rss_kib "${pid_of[$name]}")
done
for name in "${servers[@]}"; do warm_up "${port_of[$name]}"; done

# 3. The rounds: every server in turn, both shapes, the order rotated each round.
echo "# SayHello: $ROUNDS rounds of ${WINDOW} s per server and shape, after ${WARMUP} s of warm-up per server"
for round in $(seq "$ROUNDS"); do
  for i in "${!servers[@]}"; do
    name=${servers[$(((i + round - 1) % ${#servers[@]}))]}
    read -r rps_52 p99_52 cpu_52 < <(measure "$name" "${port_of[$name]}" 4 13 "${pid_of[$name]}" "$round")
    read -r rps_1 p99_1 cpu_1 < <(measure "$name" "${port_of[$name]}" 1 1 "${pid_of[$name]}" "$round")
    printf '{"server":"%s","label":"%s","round":%s,"rps_52":%s,"cpu_us_52":%s,"rps_1":%s,"p99_1_us":%s,"idle_rss_kib":%s,"ready_ms":%s,"warmup_s":%s,"duration_s":%s}\n' \
      "$name" "${label_of[$name]}" "$round" "$rps_52" "$cpu_52" "$rps_1" "$p99_1" "${idle_rss_of[$name]}" \
      "${ready_ms_of[$name]}" "$WARMUP" "$WINDOW" >>"$RESULTS/sayhello.jsonl"
    echo "round $round, ${label_of[$name]}: $rps_52 req/s with 52 streams ($cpu_52 µs of CPU per call), $rps_1 req/s with 1 stream (p99 $p99_1 µs)"
  done
done

# 4. Every call answered OK (the services with a health service count their codes), and the
# spans of the export row reached the sink.
for name in "${servers[@]}"; do
  [ "${probe_of[$name]}" = health ] || continue
  metrics_port=$((port_of[$name] + 1000))
  bad=$(handled "$metrics_port" "\$0 !~ /grpc_code=\"($ALLOWED_CODES)\"/")
  [ "$bad" = 0 ] || { echo "$name answered $bad calls with a code other than OK"; exit 1; }
done
calls=$(handled $((port_of[hello-otel] + 1000)) 1)
kill -TERM "${pid_of[hello-otel]}"; wait "${pid_of[hello-otel]}" 2>/dev/null || true
spans=$(($(sink_settled_total) - spans_before))
[ "$spans" -gt 0 ] || { echo "hello-otel exported no span to the sink"; exit 1; }
echo "hello-otel: the sink received $spans spans for $calls SayHello calls"

echo
"$BENCH" report --results "$RESULTS" --print sayhello
