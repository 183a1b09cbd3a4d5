#!/usr/bin/env bash
# Starts every service (scripts/services.sh: the packages under services/) from target/debug
# on its default ports with embedded SQLite under data/, waits until each reports SERVING,
# prints grpcurl examples, and stops them all on Ctrl-C. Logs go to .run/<service>.log.
# With SECURE=1 (make run-secure) every port is mutual TLS with the certificates in $CERTS
# (make certs) and every call but health and reflection needs a token (make token).
# Events (CONTRACT *Events*): user and order get EVENTS_URL=nats://127.0.0.1:4222, a NATS
# server with JetStream there: the one already listening, or else a nats-server from the PATH
# started here (store .run/nats, log .run/nats.log, stopped after the services); with neither,
# they run without a broker and keep their events in the outbox.
set -euo pipefail
cd "$(dirname "$0")/.."
# The image's allocator tunables (`GLIBC_TUNABLES= ` before the command: glibc's defaults).
. scripts/glibc-tunables.sh

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

NATS_PORT=4222
EVENTS_URL=
# Where user and order relay their events (nothing for the others, or without a broker).
events_env() {
  [ -n "$EVENTS_URL" ] || return 0
  case $1 in
    user-service | order-service) echo "EVENTS_URL=$EVENTS_URL" ;;
  esac
}

# The INFO line a NATS server sends first on a connection to 127.0.0.1:$1; status 1 when
# nothing listens there or what does is not NATS (it said nothing within a second).
nats_info() (
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  IFS= read -r -t 1 line <&3 || exit 1
  [[ $line == INFO* ]] && echo "$line"
) 2>/dev/null
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

mkdir -p .run data
pids=()
nats_pid=
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  # The broker last, so the services' relays are not cut off while they drain.
  if [ -n "$nats_pid" ]; then
    kill -TERM "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
  fi
}
trap stop INT TERM EXIT

no_broker="events stay in the outbox (none is lost) until EVENTS_URL is set"
if info=$(nats_info $NATS_PORT); then
  if [[ $info == *'"jetstream":true'* ]]; then
    EVENTS_URL=nats://127.0.0.1:$NATS_PORT
    echo "using the NATS server already listening on 127.0.0.1:$NATS_PORT (JetStream on) for events"
  else
    echo "the NATS server on 127.0.0.1:$NATS_PORT has JetStream off: running without a broker; $no_broker"
  fi
elif port_open $NATS_PORT; then
  echo "127.0.0.1:$NATS_PORT is taken by something that is not NATS: running without a broker; $no_broker"
elif command -v nats-server >/dev/null; then
  mkdir -p .run/nats
  nats-server -js -a 127.0.0.1 -p $NATS_PORT -sd .run/nats >.run/nats.log 2>&1 &
  nats_pid=$!
  # It answers with its INFO line once its client port is up, which is after JetStream.
  for _ in $(seq 100); do
    info=$(nats_info $NATS_PORT) && break
    if ! kill -0 "$nats_pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  if [[ $info != *'"jetstream":true'* ]]; then
    echo "nats-server did not come up with JetStream on 127.0.0.1:$NATS_PORT; its log:" >&2
    cat .run/nats.log >&2
    exit 1
  fi
  EVENTS_URL=nats://127.0.0.1:$NATS_PORT
  echo "nats-server (JetStream) is up on 127.0.0.1:$NATS_PORT, store .run/nats (log: .run/nats.log)"
else
  echo "no NATS server on 127.0.0.1:$NATS_PORT and no nats-server on the PATH: running without a broker; $no_broker"
fi

mapfile -t services < <(bash scripts/services.sh)
for service in "${services[@]}"; do
  # Made here, not by the background job's redirection, which may come after the first read.
  : >".run/$service.log"
  # shellcheck disable=SC2046 # one word per setting
  env $(security_env "$service") $(events_env "$service") target/debug/"$service" >".run/$service.log" 2>&1 &
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
TXT
else
  cat <<'TXT'

Try it (from this directory, in another terminal):

  .venv/bin/grpcurl -plaintext localhost:50051 list
  .venv/bin/grpcurl -plaintext -d '{"name":"Ada"}' localhost:50051 hello.v1.HelloService/SayHello
  EMAIL="ada.$(date +%s%N)@example.com"
  USER_ID=$(.venv/bin/grpcurl -plaintext -d "{\"name\":\"Ada\",\"email\":\"$EMAIL\"}" localhost:50052 user.v1.UserService/CreateUser | sed -n 's/^ *"id": "\(.*\)",$/\1/p')
  .venv/bin/grpcurl -plaintext -d "{\"user_id\":\"$USER_ID\",\"items\":[{\"sku\":\"book\",\"quantity\":2,\"unit_price_cents\":1250}],\"request_id\":\"$EMAIL\"}" localhost:50053 order.v1.OrderService/CreateOrder
  .venv/bin/grpcurl -plaintext -d '{"page_size":10}' localhost:50053 order.v1.OrderService/ListOrders
  .venv/bin/grpcurl -plaintext -d '{"service":"user.v1.UserService"}' localhost:50052 grpc.health.v1.Health/Check
TXT
fi

# Every change to a user or an order is published on meshwork.> (CONTRACT *Events*).
if [ -n "$EVENTS_URL" ]; then
  echo
  echo "Watch the events (create, update or delete a user, create or cancel an order):"
  echo
  if command -v nats >/dev/null; then
    echo "  nats --server $EVENTS_URL sub 'meshwork.>'"
  else
    cat <<TXT
  .venv/bin/pip install --quiet nats-py   # once; or install the nats CLI: nats sub 'meshwork.>'
  .venv/bin/python -c '
import asyncio, nats
async def main():
    nc = await nats.connect("$EVENTS_URL")
    async def show(msg):
        print(msg.subject, (msg.headers or {}).get("ce-id"), len(msg.data), "bytes of protobuf")
    await nc.subscribe("meshwork.>", cb=show)
    await asyncio.Event().wait()
asyncio.run(main())'
TXT
  fi
fi
echo
echo "Ctrl-C stops them all."
wait -n "${pids[@]}" ${nats_pid:+"$nats_pid"}
echo "a service or nats-server exited; see .run/*.log" >&2
