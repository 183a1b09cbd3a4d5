#!/usr/bin/env bash
# Starts every service (scripts/services.sh: the packages under services/) from target/debug
# on its default ports with embedded SQLite under data/, waits until each reports SERVING,
# prints grpcurl examples, and stops them all on Ctrl-C. Logs go to .run/<service>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL=.venv/bin/grpcurl
mkdir -p .run data
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

mapfile -t services < <(bash scripts/services.sh)
for service in "${services[@]}"; do
  target/debug/"$service" >".run/$service.log" 2>&1 &
  pids+=($!)
done

# Each service logs where it listens (its default port); then poll its health (bounded):
# the overall status "" follows the database, as the full service name does. A port that is
# taken or a bad setting shows here.
for service in "${services[@]}"; do
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's/.* listening grpc_addr=[^ ]*:\([0-9]*\).*/\1/p' ".run/$service.log" | head -n1)
    if [ -n "$port" ] && $GRPCURL -plaintext -d '{"service":""}' "localhost:$port" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
      echo "$service is SERVING on localhost:$port (log: .run/$service.log)"
      continue 2
    fi
    sleep 0.1
  done
  echo "$service did not become healthy; its log:" >&2
  cat ".run/$service.log" >&2
  exit 1
done

cat <<'TXT'

Try it (from this directory, in another terminal):

  .venv/bin/grpcurl -plaintext localhost:50051 list
  .venv/bin/grpcurl -plaintext -d '{"name":"Ada"}' localhost:50051 hello.v1.HelloService/SayHello
  EMAIL="ada.$(date +%s%N)@example.com"
  USER_ID=$(.venv/bin/grpcurl -plaintext -d "{\"name\":\"Ada\",\"email\":\"$EMAIL\"}" localhost:50052 user.v1.UserService/CreateUser | sed -n 's/^ *"id": "\(.*\)",$/\1/p')
  .venv/bin/grpcurl -plaintext -d "{\"user_id\":\"$USER_ID\",\"items\":[{\"sku\":\"book\",\"quantity\":2,\"unit_price_cents\":1250}],\"request_id\":\"$EMAIL\"}" localhost:50053 order.v1.OrderService/CreateOrder
  .venv/bin/grpcurl -plaintext -d '{"page_size":10}' localhost:50053 order.v1.OrderService/ListOrders
  .venv/bin/grpcurl -plaintext -d '{"service":"user.v1.UserService"}' localhost:50052 grpc.health.v1.Health/Check

Ctrl-C stops them all.
TXT
wait -n "${pids[@]}"
echo "a service exited; see .run/*.log" >&2
