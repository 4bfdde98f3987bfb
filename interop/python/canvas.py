"""Stock Celery canvases (chain, group, chord, link, link_error) for the Rust interop tests.

    python canvas.py send chain|group --order-id O [--queue Q]
        builds the canvas with the stock client, `apply_async()`s it and prints a JSON object
        of the task ids it produced ({"ids": [...], "group": "…"|null});
    python canvas.py capture OUT.json
        publishes each canvas of the fixture set to BROKER_URL (use a throwaway vhost) and writes
        every message it put on the wire (queue, headers, properties, body) to OUT.json: the
        fixtures of libs/protocol/tests/celery_canvas.rs.

A chord needs a result backend on the client (Celery refuses to start one without); the capture
uses the in-memory cache backend, which only matters to the client: nothing it stores is on the
wire. BROKER_URL selects the broker (default amqp://guest:guest@127.0.0.1:5672//).
"""

from __future__ import annotations

import argparse
import json
import sys

from celery import chain, chord, group

from shopfds_celery import WORK_QUEUES, app


def _sig(name, queue=None, **kwargs):
    sig = app.signature(name, kwargs=kwargs)
    if queue:
        sig.set(queue=queue)
    return sig


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
                            )
                        },
                        "body": message.body if isinstance(message.body, str) else message.body.decode("utf-8"),
                    }
                )
    return out


def capture(path: str) -> int:
    app.conf.result_backend = "cache+memory://"
    _declare()
    _drain()
    order = "o-1"
    canvases = {
        "group": lambda: group(
            _sig("send_order_confirmation_email", order_id=order),
            _sig("register_shipment", order_id=order),
        ),
        "chord": lambda: chord(
            [_sig("register_shipment", order_id="o-1"), _sig("register_shipment", order_id="o-2")],
            _sig("send_order_confirmation_email", order_id="o-9"),
        ),
        "chain_with_group": lambda: chain(
            _sig("generate_invoice_pdf", order_id=order),
            group(
                _sig("send_invoice_email", order_id=order),
                _sig("register_shipment", order_id=order),
            ),
        ),
        "order_canvas": lambda: group(
            _sig("send_order_confirmation_email", order_id=order),
            chain(
                _sig("generate_invoice_pdf", order_id=order),
                _sig("send_invoice_email", order_id=order),
            ),
            _sig("register_shipment", order_id=order),
        ),
        "link_and_link_error": lambda: _sig("register_shipment", order_id=order)
        .on_error(_sig("send_invoice_email", order_id="on-error"))
        .set(link=[_sig("send_invoice_email", order_id="on-success")]),
    }
    fixtures = {}
    for name, build in canvases.items():
        result = build().apply_async()
        fixtures[name] = {"result_id": result.id, "messages": _drain()}
    with open(path, "w", encoding="utf-8") as out:
        json.dump(fixtures, out, indent=1, ensure_ascii=False)
        out.write("\n")
    return 0


def send(kind: str, order_id: str, queue: str | None) -> int:
    if kind == "chain":
        canvas = chain(
            _sig("generate_invoice_pdf", queue, order_id=order_id),
            _sig("send_invoice_email", queue, order_id=order_id),
        )
    else:
        canvas = group(
            _sig("send_order_confirmation_email", queue, order_id=order_id),
            _sig("generate_invoice_pdf", queue, order_id=order_id),
            _sig("register_shipment", queue, order_id=order_id),
        )
    result = canvas.apply_async()
    if kind == "chain":
        ids, node = [], result
        while node is not None:
            ids.append(node.id)
            node = node.parent
        ids.reverse()
        print(json.dumps({"ids": ids, "group": None}))
    else:
        print(json.dumps({"ids": [r.id for r in result.results], "group": result.id}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    send_cmd = commands.add_parser("send")
    send_cmd.add_argument("kind", choices=["chain", "group"])
    send_cmd.add_argument("--order-id", required=True)
    send_cmd.add_argument("--queue")
    capture_cmd = commands.add_parser("capture")
    capture_cmd.add_argument("out")
    opts = parser.parse_args(argv)
    try:
        if opts.command == "capture":
            return capture(opts.out)
        return send(opts.kind, opts.order_id, opts.queue)
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
