"""Enqueue one task with the stock Celery client (`app.send_task`) and print its id.

The Rust workers' interop tests use this to prove a stock Python producer's messages are consumed
correctly; the app and its routing are those of shopfds_celery (the seed's configuration).

    python send_task.py send_order_confirmation_email --kwargs '{"order_id": "o-1"}' \
        [--args '[]'] [--queue email] [--countdown 5] [--task-id ID] [--headers '{"traceparent": "…"}'] [--protocol 1] \
        [--compression zlib]

BROKER_URL selects the broker (default amqp://guest:guest@127.0.0.1:5672//).
"""

from __future__ import annotations

import argparse
import json
import sys

from shopfds_celery import app


def _json_arg(kind):
    def parse(text):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"expected a JSON {kind.__name__}")
        return value

    return parse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="task name, e.g. send_order_confirmation_email")
    parser.add_argument("--kwargs", type=_json_arg(dict), default={}, help="JSON object")
    parser.add_argument("--args", type=_json_arg(list), default=[], help="JSON array")
    parser.add_argument("--queue", help="queue name; default: task_routes, else 'default'")
    parser.add_argument("--countdown", type=float, help="seconds before the task may run")
    parser.add_argument("--task-id", help="task id to use instead of a fresh uuid4")
    parser.add_argument("--headers", type=_json_arg(dict), default=None, help="extra headers (JSON)")
    parser.add_argument(
        "--protocol", type=int, choices=(1, 2), default=2, help="task message protocol (task_protocol)"
    )
    parser.add_argument(
        "--compression", help="kombu compression (zlib, bzip2, lzma, …): the `compression` option"
    )
    opts = parser.parse_args(argv)

    app.conf.task_protocol = opts.protocol
    options = {}
    if opts.queue:
        options["queue"] = opts.queue
    if opts.countdown is not None:
        options["countdown"] = opts.countdown
    if opts.task_id:
        options["task_id"] = opts.task_id
    if opts.headers:
        options["headers"] = opts.headers
    if opts.compression:
        options["compression"] = opts.compression

    try:
        result = app.send_task(opts.name, args=opts.args, kwargs=opts.kwargs, **options)
    finally:
        app.close()
    print(result.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
