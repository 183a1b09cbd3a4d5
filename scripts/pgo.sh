#!/usr/bin/env bash
# The release build, profile-guided (PGO): what the image ships and what `make bench`
# measures. On this kind of machine it makes bare tonic and the services alike 1.4-1.7x as
# fast as `cargo build --release` (docs/performance-log.md): the code a call runs is laid out
# together and inlined where the calls go, and a call's cost here is mostly instruction-cache
# and branch misses, not instructions.
#
#   1. an instrumented build (-Cprofile-generate) of every service and meshwork-bench (which
#      holds bare tonic's hello, the benchmark's baseline), in target/pgo-train;
#   2. the training: each binary serves meshwork-bench's calls for TRAIN_SECONDS per workload,
#      on loopback: hello-service with its access log, with RUST_LOG=warn and with span
#      export; user-service and order-service on SQLite (CreateUser, GetUser, ListUsers,
#      CreateOrder); bare tonic's hello. Each then stops on SIGTERM, writing its profile;
#   3. the profiles merged by llvm-profdata (rustup's llvm-tools component, added if missing);
#   4. the release build with -Cprofile-use, in target/pgo: the binaries in target/pgo/release.
#
#   scripts/pgo.sh                               (every service and meshwork-bench)
#   scripts/pgo.sh -p user-service -p order-service      (step 4 builds only these)
#   TRAIN_SECONDS=5 scripts/pgo.sh
#   PGO_RETRAIN=1 scripts/pgo.sh                 (steps 1-3 even if no source is newer than the profile)
#
# Steps 1-3 are skipped while the profile is newer than every source the binaries are built
# from, and was made by the same rustc: then the build of step 4 has nothing to do either, and
# `make bench` starts at once.
#
# bare tonic is trained and built the same way, so the benchmark's ratios compare stacks,
# not builds; but in a cargo invocation of its own (build, below). Cargo unifies features
# across the packages of one invocation, and the services' dependencies turn on features bare
# tonic would not have on its own: sqlx-core turns on `tracing`'s `log`, and bare tonic,
# which installs no subscriber, then sends every span of h2, hyper and tonic through the
# `log` fallback's checks (29% more instructions per call, docs/performance-log.md). The services
# are built together, as the image builds them.
# A profile older than the code is harmless: a function that changed is built as without PGO.
set -euo pipefail
cd "$(dirname "$0")/.."
# The image's allocator tunables (`GLIBC_TUNABLES= ` before the command: glibc's defaults).
. scripts/glibc-tunables.sh

TRAIN_SECONDS=${TRAIN_SECONDS:-3}
[[ $TRAIN_SECONDS =~ ^[1-9][0-9]*$ ]] || { echo "TRAIN_SECONDS is a whole number of seconds"; exit 2; }
CARGO=${CARGO:-cargo}
SERVICES=$(bash scripts/services.sh)
PROFILES=$PWD/target/pgo-profiles
TRAIN_BIN=target/pgo-train/release
WORK=$PROFILES/work
# Ports below Linux's ephemeral range, apart from make bench's (2xxxx).
PORT=18061

if [ $# -eq 0 ]; then
  for service in $SERVICES; do set -- "$@" -p "$service"; done
  set -- "$@" -p meshwork-bench
fi

# llvm-profdata of the toolchain's own LLVM (a profile is read only by the LLVM that wrote it).
host=$(rustc -vV | awk '/^host:/ { print $2 }')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
  rustup component add llvm-tools >/dev/null
fi
[ -x "$PROFDATA" ] || { echo "llvm-profdata is missing: rustup component add llvm-tools"; exit 1; }

PROFILE=$PROFILES/meshwork.profdata
# What the binaries are built from: a profile newer than all of it is still the code's.
SOURCES=(Cargo.toml Cargo.lock .cargo src proto rpc clients database events services bench)

# build RUSTFLAGS TARGET_DIR -p PACKAGE...: meshwork-bench (bare tonic's hello) in a cargo
# invocation of its own, the rest together.
build() {
  local flags=$1 target_dir=$2 together=() alone=(); shift 2
  while [ $# -gt 0 ]; do
    [ "$1" = -p ] && [ $# -ge 2 ] || { echo "scripts/pgo.sh takes -p PACKAGE arguments only"; exit 2; }
    if [ "$2" = meshwork-bench ]; then alone=(-p meshwork-bench); else together+=(-p "$2"); fi
    shift 2
  done
  if [ ${#together[@]} -gt 0 ]; then
    RUSTFLAGS="${RUSTFLAGS:-} $flags" "$CARGO" build --release --locked --target-dir "$target_dir" "${together[@]}"
  fi
  if [ ${#alone[@]} -gt 0 ]; then
    RUSTFLAGS="${RUSTFLAGS:-} $flags" "$CARGO" build --release --locked --target-dir "$target_dir" "${alone[@]}"
  fi
}

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# bench ARGS...: meshwork-bench, instrumented too; its own profile is not kept (it is the
# load, not a server).
bench() { LLVM_PROFILE_FILE="$WORK/load-%p.profraw" "$TRAIN_BIN/meshwork-bench" "$@"; }

# serve NAME BINARY PROBE [ENV=VALUE...]: starts BINARY on the next port, waits until ready.
# The services on one thread, as on one CPU (the manifests' limit, and how make bench pins
# them): the single-threaded scheduler is the one trained. Bare tonic is trained on both
# (its baseline keeps #[tokio::main]'s scheduler: WORKER_THREADS= empty).
serve() {
  local name=$1 binary=$2 probe=$3; shift 3
  PORT=$((PORT + 2))
  env WORKER_THREADS=1 "$@" DATABASE_URL="sqlite://$WORK/$name.sqlite" LISTEN_ADDR=127.0.0.1:$PORT \
    METRICS_ADDR=127.0.0.1:$((PORT + 1)) "$TRAIN_BIN/$binary" >"$WORK/$name.log" 2>&1 &
  pids+=($!)
  bench ready --target "http://127.0.0.1:$PORT" --probe "$probe" --timeout 30s \
    || { echo "$name did not start:"; cat "$WORK/$name.log"; exit 1; }
}

# train RPC TARGET [load args...]: TRAIN_SECONDS of calls, 64 in flight.
train() {
  local rpc=$1 target=$2; shift 2
  bench load --rpc "$rpc" --target "$target" --duration "${TRAIN_SECONDS}s" --warmup 0s "$@" >/dev/null
}

# stop_all: SIGTERM, and wait: each server writes its profile as it exits.
stop_all() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}

# train_profile: steps 1-3, the profile written to $PROFILE.
train_profile() {
  # 1. Instrumented: every service, and meshwork-bench (bare tonic's hello, the load).
  local packages=(-p meshwork-bench) service
  for service in $SERVICES; do packages+=(-p "$service"); done
  build "-Cprofile-generate=$PROFILES/raw" target/pgo-train "${packages[@]}"
  rm -rf "$PROFILES/raw" "$WORK"
  mkdir -p "$PROFILES/raw" "$WORK"

  # 2. The training, on loopback.
  local sink_addr=127.0.0.1:$((PORT - 1))
  LLVM_PROFILE_FILE="$WORK/sink-%p.profraw" "$TRAIN_BIN/meshwork-bench" sink --listen "$sink_addr" 2>/dev/null &
  pids+=($!)
  serve bare bare-hello say-hello WORKER_THREADS=
  train say-hello "http://127.0.0.1:$PORT"
  serve bare-1 bare-hello say-hello
  train say-hello "http://127.0.0.1:$PORT"
  serve hello hello-service health
  train say-hello "http://127.0.0.1:$PORT"
  serve hello-warn hello-service health RUST_LOG=warn
  train say-hello "http://127.0.0.1:$PORT"
  serve hello-export hello-service health OTEL_EXPORTER_OTLP_ENDPOINT="http://$sink_addr" OTEL_TRACES_SAMPLER=always_on
  train say-hello "http://127.0.0.1:$PORT"
  serve user user-service health
  local user=http://127.0.0.1:$PORT
  serve order order-service health USER_SERVICE_URL="$user"
  local order=http://127.0.0.1:$PORT
  bench seed --target "$user" --users 500 --out "$WORK/users.txt" >/dev/null
  train create-user "$user"
  train get-user "$user" --users "$WORK/users.txt"
  train list-users "$user"
  train create-order "$order" --users "$WORK/users.txt"
  stop_all

  # 3. Merged.
  local raw
  raw=$(find "$PROFILES/raw" -name '*.profraw' | sort)
  [ -n "$raw" ] || { echo "the training wrote no profile"; exit 1; }
  # shellcheck disable=SC2086 # one path a line, none with spaces (our own folder)
  "$PROFDATA" merge -o "$PROFILE" $raw
  echo "$RUSTC_VERSION" >"$PROFILES/rustc-version"
  echo "PGO: trained on $(wc -l <<<"$raw") binaries, $TRAIN_SECONDS s per workload"
}

# A profile is read only by the LLVM that wrote it: a new toolchain trains again.
RUSTC_VERSION=$(rustc -vV | tr '\n' ' ')
if [ -z "${PGO_RETRAIN:-}" ] && [ -f "$PROFILE" ] \
  && [ "$(cat "$PROFILES/rustc-version" 2>/dev/null)" = "$RUSTC_VERSION" ] \
  && [ -z "$(find "${SOURCES[@]}" -newer "$PROFILE" -type f -print -quit)" ]; then
  echo "PGO: $PROFILE is newer than the sources; not trained again (PGO_RETRAIN=1 does)"
else
  train_profile
fi

# 4. Optimised with the profile.
build "-Cprofile-use=$PROFILE" target/pgo "$@"
echo "PGO build: target/pgo/release"
