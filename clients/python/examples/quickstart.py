"""Create a user, place an order, and see it in the order stream: against `make run`
(the default ports of CONTRACT.md). `make test` checks this file with `mypy --strict`.

    .venv/bin/python clients/python/examples/quickstart.py
"""

from __future__ import annotations

import sys
import uuid

import grpc

import meshwork_client
from meshwork_client.order.v1 import order_pb2, order_pb2_grpc
from meshwork_client.user.v1 import user_pb2, user_pb2_grpc

USER_SERVICE = "localhost:50052"
ORDER_SERVICE = "localhost:50053"


def create_user(users: user_pb2_grpc.UserServiceStub, name: str, email: str) -> user_pb2.User | None:
    try:
        return users.CreateUser(user_pb2.CreateUserRequest(name=name, email=email)).user
    except grpc.RpcError as error:
        for field, description in meshwork_client.field_violations(error):
            print(f"  {field}: {description}", file=sys.stderr)
        info = meshwork_client.error_info(error)
        if info is not None:
            print(f"  {info.domain} said {info.reason}", file=sys.stderr)
        return None


def main() -> int:
    with meshwork_client.connect(USER_SERVICE) as user_channel, meshwork_client.connect(ORDER_SERVICE) as order_channel:
        users = user_pb2_grpc.UserServiceStub(user_channel)
        orders = order_pb2_grpc.OrderServiceStub(order_channel)

        print("an invalid user is refused, field by field:")
        create_user(users, "", "not-an-email")

        user = create_user(users, "Ada", f"ada.{uuid.uuid4().hex}@example.com")
        if user is None:
            return 1
        print(f"created user {user.id} <{user.email}>")

        watch = orders.WatchOrders(order_pb2.WatchOrdersRequest(user_id=user.id), timeout=30)
        watch.initial_metadata()  # subscribed: every order placed from now on is streamed
        order = orders.CreateOrder(
            order_pb2.CreateOrderRequest(
                user_id=user.id,
                items=[order_pb2.OrderItem(sku="book", quantity=2, unit_price_cents=1250)],
                request_id=uuid.uuid4().hex,  # sent again after a failure, it creates one order
            )
        ).order
        print(f"placed order {order.id}: {order.total_cents} cents")

        event = next(watch)
        watch.cancel()
        print(f"watched: {order_pb2.OrderEventType.Name(event.event_type)} {event.order.id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
