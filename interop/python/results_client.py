"""A stock Celery client reading results, for the Rust result backends' interop tests.

The app is shopfds_celery's, with the result backend of SHOPFDS_RESULT_BACKEND
(redis://…, rpc://). Every command prints one JSON object per line, flushed at once:

    python results_client.py get NAME [--kwargs JSON] [--queue Q] [--timeout S]
        app.send_task(...) then .get(timeout=S):
        {"id", "state", "result"} or, when .get() raised, {"id", "state", "raised",
        "raised_module", "message"};
    python results_client.py progress NAME [--kwargs JSON] [--queue Q] [--timeout S]
        prints {"id"}, polls until .state is PROGRESS and prints {"id", "state", "info"}, then
        .get() as above;
    python results_client.py read ID [--timeout S]
        AsyncResult(ID).get(timeout=S), printed as above;
    python results_client.py chord --part NAME:QUEUE:JSON_KWARGS ... --body NAME:QUEUE
        [--timeout S]
        chord(group(parts), body).apply_async() with the stock canvas, prints
        {"group", "parts": [ids], "body"}, then .get() of the body as above.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from celery import chord, group

from shopfds_celery import app


def emit(obj) -> None:
    print(json.dumps(obj, default=str), flush=True)


def outcome(result, timeout: float) -> dict:
    try:
        value = result.get(timeout=timeout)
    except Exception as exc:  # what a user's .get() raises
        return {
            "id": result.id,
            "state": result.state,
            "raised": type(exc).__name__,
            "raised_module": type(exc).__module__,
            "message": str(exc),
        }
    return {"id": result.id, "state": result.state, "result": value}


def send(opts):
    options = {"queue": opts.queue} if opts.queue else {}
    return app.send_task(opts.name, kwargs=json.loads(opts.kwargs), **options)


def cmd_get(opts) -> int:
    emit(outcome(send(opts), opts.timeout))
    return 0


def cmd_read(opts) -> int:
    emit(outcome(app.AsyncResult(opts.id), opts.timeout))
    return 0


def cmd_progress(opts) -> int:
    result = send(opts)
    emit({"id": result.id})
    deadline = time.monotonic() + opts.timeout
    while result.state != "PROGRESS":
        if time.monotonic() > deadline:
            emit({"id": result.id, "state": result.state, "error": "no PROGRESS in time"})
            return 1
        time.sleep(0.05)
    emit({"id": result.id, "state": result.state, "info": result.info})
    emit(outcome(result, opts.timeout))
    return 0


def _sig(spec: str, with_kwargs: bool):
    parts = spec.split(":", 2)
    name, queue = parts[0], parts[1]
    kwargs = json.loads(parts[2]) if with_kwargs and len(parts) > 2 else {}
    return app.signature(name, kwargs=kwargs).set(queue=queue)


def cmd_chord(opts) -> int:
    header = group(_sig(p, True) for p in opts.part)
    result = chord(header, _sig(opts.body, False)).apply_async()
    emit({"group": result.parent.id, "parts": [r.id for r in result.parent.results], "body": result.id})
    emit(outcome(result, opts.timeout))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("get", "progress"):
        cmd = commands.add_parser(name)
        cmd.add_argument("name")
        cmd.add_argument("--kwargs", default="{}")
        cmd.add_argument("--queue")
        cmd.add_argument("--timeout", type=float, default=30.0)
    cmd = commands.add_parser("read")
    cmd.add_argument("id")
    cmd.add_argument("--timeout", type=float, default=30.0)
    cmd = commands.add_parser("chord")
    cmd.add_argument("--part", action="append", required=True, help="NAME:QUEUE:JSON_KWARGS")
    cmd.add_argument("--body", required=True, help="NAME:QUEUE")
    cmd.add_argument("--timeout", type=float, default=30.0)
    opts = parser.parse_args(argv)
    try:
        return {"get": cmd_get, "progress": cmd_progress, "read": cmd_read, "chord": cmd_chord}[opts.command](opts)
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
