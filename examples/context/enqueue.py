"""Enqueue jobs the way two web requests would, then wait until they are done."""

from __future__ import annotations

import uuid

from .tasks import Current, broker, create_invoice, request_id


def handle_request(tenant: str, user_id: int, order_id: int) -> None:
    """What a web framework's request handler (or middleware) does."""
    token = request_id.set(uuid.uuid4().hex[:8])
    try:
        with Current.using(tenant=tenant, user_id=user_id):
            create_invoice.send(order_id)
    finally:
        request_id.reset(token)


def main() -> None:
    handle_request("acme", 7, 1001)
    handle_request("globex", 9, 2002)
    create_invoice.send(3003)  # outside any request: the job sees no tenant
    broker.join("context", timeout=60_000)
    print("All 6 jobs are done: each logged the tenant, user and request id it was sent with.")
    broker.close()


if __name__ == "__main__":
    main()
