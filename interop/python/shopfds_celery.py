"""A stock Celery 5 app configured as the seed configures ShopFDS, for interop tests.

The Rust workers and clients must be wire-compatible with this app: it declares the seed's
topology (work queues dead-lettering to the `dlx` topic exchange as `failed.<queue>`), routes the
seed's task names to their queues, speaks JSON only and acknowledges late. Its tasks do no real
work: each execution appends one JSON line describing the request it received (id, args, kwargs,
retries, root/parent/group ids, eta, expires, traceparent, delivery info) to the file named by
`INTEROP_OUT`, so a test can check what a Rust producer actually put on the wire. Their
signatures are those of the Rust argument types (`shopfds_protocol::TASK_SIGNATURES`), checked
by libs/protocol/tests/python_stubs.rs.

Run with `PYTHONPATH=interop/python celery -A shopfds_celery worker -Q email ...`.

Environment:
  BROKER_URL        amqp URL (default amqp://guest:guest@127.0.0.1:5672//)
  INTEROP_OUT       file the executions are appended to (no file, no record)
  SHOPFDS_QUEUE_TYPE  classic (default) or quorum: the x-queue-type of the work queues
  SHOPFDS_TASK_EVENTS  1: send task events (as `celery worker -E`)
  SHOPFDS_RESULT_BACKEND  Celery's result_backend (e.g. redis://127.0.0.1:6379/0 or rpc://);
                    unset (default): no result backend and every task ignores its result
"""

from __future__ import annotations

import json
import os
import threading
import time

from celery import Celery
from celery.signals import worker_ready
from kombu import Exchange, Queue

WORK_QUEUES = ("default", "email", "fds", "reports", "maintenance")
DEAD_LETTER_EXCHANGE = "dlx"

BROKER_URL = os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE_TYPE = os.environ.get("SHOPFDS_QUEUE_TYPE", "classic")
# The Rust side's BROKER_MAX_PRIORITY (Celery's task_queue_max_priority): both must declare the
# same x-max-priority, or the second declaration fails with PRECONDITION_FAILED.
MAX_PRIORITY = int(os.environ.get("BROKER_MAX_PRIORITY") or 0)
# A result backend shared with the Rust workers (RESULT_BACKEND on their side); none by default.
RESULT_BACKEND = os.environ.get("SHOPFDS_RESULT_BACKEND") or None

app = Celery("shopfds", broker=BROKER_URL, backend=RESULT_BACKEND)

dead_letter_exchange = Exchange(DEAD_LETTER_EXCHANGE, type="topic", durable=True)


def _work_queue(name: str) -> Queue:
    arguments = {
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": f"failed.{name}",
    }
    if QUEUE_TYPE != "classic":
        arguments["x-queue-type"] = QUEUE_TYPE
    elif MAX_PRIORITY > 0:
        arguments["x-max-priority"] = MAX_PRIORITY
    return Queue(
        name,
        Exchange(name, type="direct", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments=arguments,
    )


def _dead_letter_queue(name: str) -> Queue:
    return Queue(
        f"failed.{name}",
        exchange=dead_letter_exchange,
        routing_key=f"failed.{name}",
        durable=True,
    )


app.conf.update(
    task_queues=tuple(_work_queue(q) for q in WORK_QUEUES)
    + tuple(_dead_letter_queue(q) for q in WORK_QUEUES),
    task_default_queue="default",
    task_default_exchange="default",
    task_default_routing_key="default",
    task_routes={
        "send_order_confirmation_email": {"queue": "email"},
        "send_invoice_email": {"queue": "email"},
        "generate_invoice_pdf": {"queue": "reports"},
        "register_shipment": {"queue": "default"},
        "batch_fds_evaluation": {"queue": "fds"},
        "evaluate_transaction": {"queue": "fds"},
        "update_threat_intelligence": {"queue": "fds"},
        "generate_sales_report": {"queue": "reports"},
        "generate_daily_sales_report": {"queue": "reports"},
        "archive_old_logs": {"queue": "maintenance"},
        "reprocess_failed_tasks": {"queue": "default"},
    },
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # Without a result backend the tests read INTEROP_OUT, not results.
    task_ignore_result=RESULT_BACKEND is None,
    # name, args, kwargs, worker, retries and queue in each result, as the Rust side writes them.
    result_extended=True,
    broker_connection_retry_on_startup=True,
    enable_utc=True,
    timezone="UTC",
    # Task events (`-E`), for the monitoring tests that compare a stock worker's events with a
    # Rust worker's.
    worker_send_task_events=os.environ.get("SHOPFDS_TASK_EVENTS") == "1",
)

_out_lock = threading.Lock()


def _json_safe(value):
    """Round-trips through JSON, turning anything exotic (datetimes, tuples of objects) into text."""
    return json.loads(json.dumps(value, default=str))


def _record(task, args, kwargs) -> None:
    path = os.environ.get("INTEROP_OUT")
    if not path:
        return
    request = task.request
    headers = request.headers or {}
    delivery_info = request.delivery_info or {}
    line = {
        "task": task.name,
        "id": request.id,
        "args": list(args),
        "kwargs": dict(kwargs),
        "retries": request.retries,
        "root_id": request.root_id,
        "parent_id": request.parent_id,
        "group": request.group,
        "eta": request.eta,
        "expires": request.expires,
        # Custom message headers become attributes of the request in Celery 5.
        "traceparent": request.get("traceparent") or headers.get("traceparent"),
        "timelimit": request.timelimit,
        "correlation_id": request.correlation_id,
        "origin": request.origin,
        "hostname": request.hostname,
        "chain": request.chain,
        "callbacks": request.callbacks,
        "errbacks": request.errbacks,
        "chord": request.chord,
        "delivery_info": {
            "exchange": delivery_info.get("exchange"),
            "routing_key": delivery_info.get("routing_key"),
            "redelivered": delivery_info.get("redelivered"),
            "priority": delivery_info.get("priority"),
        },
        "executed_at": time.time(),
    }
    encoded = json.dumps(_json_safe(line), ensure_ascii=False) + "\n"
    # One write per line under a lock: the thread pool runs tasks concurrently.
    with _out_lock, open(path, "a", encoding="utf-8") as out:
        out.write(encoded)
        out.flush()


@worker_ready.connect
def _declare_topology(sender=None, **_):
    """Declare every queue of the seed (also the `failed.*` ones this worker does not consume), so
    messages dead-lettered to `dlx` have somewhere to go, as in the seed's deployment."""
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue.bind(conn.default_channel).declare()


@app.task(bind=True, name="send_order_confirmation_email")
def send_order_confirmation_email(self, order_id):
    _record(self, self.request.args, self.request.kwargs)
    return {"order_id": order_id, "sent": True}


@app.task(bind=True, name="generate_invoice_pdf")
def generate_invoice_pdf(self, order_id):
    _record(self, self.request.args, self.request.kwargs)
    return {"order_id": order_id, "invoice": f"invoices/{order_id}.pdf"}


# In a chain after generate_invoice_pdf, Celery passes that task's result as the first positional
# argument; called on its own, only order_id is given (keyword-only: Python allows no required
# parameter after invoice=None).
@app.task(bind=True, name="send_invoice_email")
def send_invoice_email(self, invoice=None, *, order_id):
    _record(self, self.request.args, self.request.kwargs)
    return {"order_id": order_id, "invoice": invoice, "sent": True}


@app.task(bind=True, name="register_shipment")
def register_shipment(self, order_id):
    _record(self, self.request.args, self.request.kwargs)
    return {"order_id": order_id, "tracking_number": f"TRK-{order_id}"}


@app.task(bind=True, name="batch_fds_evaluation")
def batch_fds_evaluation(self, transaction_ids=None, date=None):
    _record(self, self.request.args, self.request.kwargs)
    return {"evaluated": len(transaction_ids or [])}


@app.task(bind=True, name="evaluate_transaction")
def evaluate_transaction(self, order_id):
    _record(self, self.request.args, self.request.kwargs)
    return {"order_id": order_id, "score": 0}


@app.task(bind=True, name="update_threat_intelligence")
def update_threat_intelligence(self, url=None):
    _record(self, self.request.args, self.request.kwargs)
    return {"updated": True}


@app.task(bind=True, name="generate_sales_report")
def generate_sales_report(self, start_date, end_date, user_id=None):
    _record(self, self.request.args, self.request.kwargs)
    return {"start_date": start_date, "end_date": end_date, "user_id": user_id}


@app.task(bind=True, name="generate_daily_sales_report")
def generate_daily_sales_report(self):
    _record(self, self.request.args, self.request.kwargs)
    return {"status": "completed"}


@app.task(bind=True, name="archive_old_logs")
def archive_old_logs(self, older_than_days=90):
    _record(self, self.request.args, self.request.kwargs)
    return {"archived": 0, "older_than_days": older_than_days}


@app.task(bind=True, name="reprocess_failed_tasks")
def reprocess_failed_tasks(self):
    _record(self, self.request.args, self.request.kwargs)
    return {"reprocessed": 0}


@app.task(bind=True, name="health_check")
def health_check(self):
    _record(self, self.request.args, self.request.kwargs)
    return {"status": "ok"}


# Test-only (not a ShopFDS task; named `interop.*` so the stub check skips it).
@app.task(bind=True, name="interop.sleep")
def sleep(self, seconds=1.0):
    """Sleeps: a task that stays active while a test inspects the worker."""
    _record(self, self.request.args, self.request.kwargs)
    time.sleep(float(seconds))
    return {"slept": seconds}



@app.task(bind=True, name="interop.fail_permanently")
def fail_permanently(self, reason="failed on purpose"):
    """Always raises ValueError(reason): a chord part that fails on a stock worker."""
    _record(self, self.request.args, self.request.kwargs)
    raise ValueError(reason)
