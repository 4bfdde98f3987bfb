"""Celery message protocol v1, as a stock Celery 5.5 client still sends it with `task_protocol=1`.

    python protocol_v1.py capture OUT.json
        publishes each message of the fixture set with the stock client of `shopfds_celery`
        configured with `task_protocol=1` to BROKER_URL (use a throwaway vhost: the work queues
        are drained first) and writes every message it put on the wire (queue, headers,
        properties, body) to OUT.json: the fixtures of libs/protocol/tests/celery_protocol_v1.rs.

A protocol v1 message has no `task` header: the whole request is the JSON body, an object
`{task, id, args, kwargs, group, group_index, retries, eta, expires, utc, callbacks, errbacks,
timelimit, taskset, chord}` (celery/app/amqp.py `as_task_v1`); a chain travels as link callbacks.
BROKER_URL selects the broker (default amqp://guest:guest@127.0.0.1:5672//).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from celery import chain

from shopfds_celery import WORK_QUEUES, app

ORDER_ID = "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60"


def _declare():
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue.bind(conn.default_channel).declare()


def _drain():
    """Every message now in the work queues, in queue order, taken off them."""
    out = []
    with app.connection_for_read() as conn:
        channel = conn.channel()
        for queue in WORK_QUEUES:
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                props = message.properties
                body = message.body
                out.append(
                    {
                        "queue": queue,
                        "headers": message.headers,
                        "properties": {
                            key: props.get(key)
                            for key in (
                                "content_type",
                                "content_encoding",
                                "delivery_mode",
                                "priority",
                                "correlation_id",
                                "reply_to",
                                "expiration",
                            )
                            if key in props
                        },
                        "body": body if isinstance(body, str) else body.decode("utf-8"),
                    }
                )
    return out


def _messages():
    """name -> a function that publishes one fixture and returns nothing."""
    sig = app.signature
    return {
        "kwargs_only": lambda: app.send_task(
            "send_order_confirmation_email",
            kwargs={"order_id": ORDER_ID},
            task_id="11111111-0000-4000-8000-000000000001",
        ),
        "positional_timelimit": lambda: app.send_task(
            "generate_sales_report",
            args=["2026-11-01", "2026-11-21"],
            kwargs={"user_id": "u-1"},
            task_id="11111111-0000-4000-8000-000000000002",
            time_limit=300,
            soft_time_limit=240,
        ),
        "eta_expires": lambda: app.send_task(
            "generate_sales_report",
            args=["2026-11-01", "2026-11-21"],
            task_id="11111111-0000-4000-8000-000000000003",
            eta=datetime(2030, 1, 15, 9, 30, 0, tzinfo=timezone.utc),
            expires=datetime(2030, 1, 15, 10, 30, 0, tzinfo=timezone.utc),
        ),
        "countdown": lambda: app.send_task(
            "register_shipment",
            kwargs={"order_id": ORDER_ID},
            task_id="11111111-0000-4000-8000-000000000004",
            countdown=30,
        ),
        "link_and_link_error": lambda: sig("register_shipment", kwargs={"order_id": ORDER_ID})
        .on_error(sig("send_invoice_email", kwargs={"order_id": ORDER_ID}, immutable=True))
        .set(link=[sig("send_invoice_email", kwargs={"order_id": ORDER_ID})])
        .apply_async(task_id="11111111-0000-4000-8000-000000000005"),
        # Under protocol 1 a chain is the first task with the rest as link callbacks.
        "chain": lambda: chain(
            sig("generate_invoice_pdf", kwargs={"order_id": ORDER_ID}),
            sig("send_invoice_email", kwargs={"order_id": ORDER_ID}),
        ).apply_async(),
        "group": lambda: app.send_task(
            "register_shipment",
            kwargs={"order_id": ORDER_ID},
            task_id="11111111-0000-4000-8000-000000000007",
            group_id="22222222-0000-4000-8000-000000000001",
            group_index=0,
        ),
    }


def capture(path: str) -> int:
    app.conf.task_protocol = 1
    _declare()
    _drain()
    fixtures = {}
    for name, publish in _messages().items():
        publish()
        messages = _drain()
        if len(messages) != 1:
            raise SystemExit(f"{name}: expected one message on the wire, found {len(messages)}")
        fixtures[name] = messages[0]
    with open(path, "w", encoding="utf-8") as out:
        json.dump(fixtures, out, indent=1, ensure_ascii=False)
        out.write("\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    capture_cmd = commands.add_parser("capture")
    capture_cmd.add_argument("out")
    opts = parser.parse_args(argv)
    try:
        return capture(opts.out)
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
