"""The stock Celery contender of `make bench` (tools/bench): the app of shopfds_celery.py (same
queues, JSON, acks after the task, results ignored unless SHOPFDS_RESULT_BACKEND is set) plus one
no-op task, `bench_noop`, which only counts itself.

Each process that ran bench tasks (a prefork pool process, or the worker itself with the threads
pool) writes `{"count": n, "first": t0, "last": t1}` (wall-clock seconds) to BENCH_OUT/<pid>.json
when the worker shuts down, so the harness times the drain from the first task to the last
without counting the worker's start.

Run with `PYTHONPATH=interop/python celery -A bench_celery worker -Q default ...`.

Environment (besides shopfds_celery's):
  BENCH_OUT                  directory the tallies are written to (required)
  BENCH_PREFETCH_MULTIPLIER  worker_prefetch_multiplier, so that multiplier x concurrency is the
                             prefetch every contender gets (default 4)
"""

from __future__ import annotations

import json
import os
import threading
import time

from celery.signals import worker_process_shutdown, worker_shutdown

from shopfds_celery import app

app.conf.worker_prefetch_multiplier = int(os.environ.get("BENCH_PREFETCH_MULTIPLIER") or 4)

_lock = threading.Lock()
_tally = {"count": 0, "first": None, "last": None}


@app.task(name="bench_noop")
def bench_noop():
    now = time.time()
    # The threads pool runs tasks concurrently; the lock costs well under a microsecond.
    with _lock:
        if _tally["first"] is None:
            _tally["first"] = now
        _tally["last"] = now
        _tally["count"] += 1


def _write_tally(**_):
    if not _tally["count"]:
        return
    out = os.environ["BENCH_OUT"]
    with open(os.path.join(out, f"{os.getpid()}.json"), "w", encoding="utf-8") as f:
        json.dump(_tally, f)


# Prefork: each pool process on its way out; threads: the worker itself.
worker_process_shutdown.connect(_write_tally, weak=False)
worker_shutdown.connect(_write_tally, weak=False)
