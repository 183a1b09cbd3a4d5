#!/usr/bin/env bash
# Starts every service (scripts/services.sh: the packages under services/) from target/debug
# on its default ports with embedded SQLite under data/, waits until each reports SERVING,
# prints grpcurl examples, and stops them all on Ctrl-C. Logs go to .run/<service>.log.
# With SECURE=1 (make run-secure) every port is mutual TLS with the certificates in $CERTS
# (make certs) and every call but health and reflection needs a token (make token).
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL=.venv/bin/grpcurl
SECURE=${SECURE:-}
CERTS=${CERTS:-.certs}
TLS_FLAGS=(-plaintext)
if [ -n "$SECURE" ]; then
  TLS_FLAGS=(-cacert "$CERTS/ca.pem" -cert "$CERTS/client.pem" -key "$CERTS/client-key.pem")
fi

# The settings that switch mutual TLS and authentication on for service $1 (none without SECURE).
security_env() {
  [ -n "$SECURE" ] || return 0
  echo "TLS_CERT=$CERTS/$1.pem TLS_KEY=$CERTS/$1-key.pem TLS_CLIENT_CA=$CERTS/ca.pem"
  echo "AUTH_JWT_SECRET_FILE=$CERTS/jwt-secret AUTH_ISSUER=${DEV_ISSUER:-meshwork-dev} AUTH_AUDIENCE=${DEV_AUDIENCE:-meshwork}"
  # Order calls User over mutual TLS, presenting its own certificate.
  if [ "$1" = order-service ]; then
    echo "USER_SERVICE_URL=https://localhost:50052 USER_SERVICE_CA=$CERTS/ca.pem"
  fi
}
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
  # shellcheck disable=SC2046 # one word per setting
  env $(security_env "$service") target/debug/"$service" >".run/$service.log" 2>&1 &
  pids+=($!)
done

# Each service logs where it listens (its default port); then poll its health (bounded):
# the overall status "" follows the database, as the full service name does. A port that is
# taken or a bad setting shows here.
for service in "${services[@]}"; do
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's/.* listening grpc_addr=[^ ]*:\([0-9]*\).*/\1/p' ".run/$service.log" | head -n1)
    if [ -n "$port" ] && $GRPCURL "${TLS_FLAGS[@]}" -d '{"service":""}' "localhost:$port" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
      echo "$service is SERVING on localhost:$port (log: .run/$service.log)"
      continue 2
    fi
    sleep 0.1
  done
  echo "$service did not become healthy; its log:" >&2
  cat ".run/$service.log" >&2
  exit 1
done

if [ -n "$SECURE" ]; then
  cat <<'TXT'

Mutual TLS and authentication are on. Try it (from this directory, in another terminal):

  TLS="-cacert .certs/ca.pem -cert .certs/client.pem -key .certs/client-key.pem"
  .venv/bin/grpcurl $TLS localhost:50051 list
  ADMIN=$(make -s token SUB=admin ROLES=admin)
  .venv/bin/grpcurl $TLS -H "authorization: Bearer $ADMIN" -d '{"name":"Ada"}' localhost:50051 hello.v1.HelloService/SayHello
  EMAIL="ada.$(date +%s%N)@example.com"
  USER_ID=$(.venv/bin/grpcurl $TLS -H "authorization: Bearer $ADMIN" -d "{\"name\":\"Ada\",\"email\":\"$EMAIL\"}" localhost:50052 user.v1.UserService/CreateUser | sed -n 's/^ *"id": "\(.*\)",$/\1/p')
  ADA=$(make -s token SUB=$USER_ID)
  .venv/bin/grpcurl $TLS -H "authorization: Bearer $ADA" -d "{\"user_id\":\"$USER_ID\",\"items\":[{\"sku\":\"book\",\"quantity\":1,\"unit_price_cents\":1250}]}" localhost:50053 order.v1.OrderService/CreateOrder
  .venv/bin/grpcurl $TLS -H "authorization: Bearer $ADA" -d '{}' localhost:50053 order.v1.OrderService/ListOrders   # PermissionDenied: every user's orders are for admins

Ctrl-C stops them all.
TXT
  wait -n "${pids[@]}"
  echo "a service exited; see .run/*.log" >&2
  exit 1
fi

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
