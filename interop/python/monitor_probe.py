"""What stock Celery's monitoring tools see: remote-control replies and events, as JSON.

Used by the Rust monitoring tests to put the same questions to a stock Celery worker and to a
Rust worker and compare the answers (`libs/broker/tests/broker/monitor.rs`).

  python monitor_probe.py inspect <command> [--dest NODE ...] [--timeout S] [--args JSON]
      Prints {node: reply} of `app.control.broadcast(command, reply=True)`.
  python monitor_probe.py events --seconds S [--until TYPE:COUNT]
      Captures events on `celeryev` for S seconds (or until COUNT events of TYPE arrived) and
      prints them as a JSON list, one object per event as the Receiver delivers it.

Environment: BROKER_URL (as shopfds_celery).
"""

from __future__ import annotations

import argparse
import json
import threading
import sys

from shopfds_celery import app


def _finite(value):
    """Python's json writes Infinity and NaN, which JSON has not: their reprs instead."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def inspect(args: argparse.Namespace) -> None:
    arguments = json.loads(args.args) if args.args else {}
    replies = app.control.broadcast(
        args.command,
        arguments=arguments,
        destination=args.dest or None,
        reply=True,
        timeout=args.timeout,
    )
    merged: dict = {}
    for reply in replies or []:
        merged.update(reply)
    json.dump(_finite(merged), sys.stdout, default=repr)


def events(args: argparse.Namespace) -> None:
    captured: list = []
    until_type, until_count = None, 0
    if args.until:
        until_type, count = args.until.rsplit(":", 1)
        until_count = int(count)
    # Celery's receiver queue drops events older than 5 s (event_queue_ttl): on a loaded
    # machine this process may fall that far behind, and the test would miss events.
    app.conf.event_queue_ttl = 120.0
    with app.connection() as conn:
        receiver = app.events.Receiver(conn, handlers={})

        def on_event(event: dict) -> None:
            captured.append(event)
            if until_type and sum(1 for e in captured if e.get("type") == until_type) >= until_count:
                receiver.should_stop = True

        def on_ready(*_args, **_kwargs) -> None:
            # The receiver's queue is bound: the caller may act now.
            print("ready", file=sys.stderr, flush=True)

        receiver.handlers = {"*": on_event}
        receiver.on_consume_ready = on_ready
        timer = threading.Timer(args.seconds, lambda: setattr(receiver, "should_stop", True))
        timer.start()
        try:
            receiver.capture(limit=None, timeout=None, wakeup=False)
        finally:
            timer.cancel()
    json.dump(captured, sys.stdout, default=repr)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("inspect")
    p.add_argument("command")
    p.add_argument("--dest", action="append")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--args")
    p.set_defaults(run=inspect)
    e = sub.add_parser("events")
    e.add_argument("--seconds", type=float, default=10.0)
    e.add_argument("--until")
    e.set_defaults(run=events)
    parsed = parser.parse_args()
    parsed.run(parsed)


if __name__ == "__main__":
    main()
