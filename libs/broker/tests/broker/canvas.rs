//! Canvas on real workers: groups, chords counted in PostgreSQL (on two workers at once),
//! errbacks, the scenario's order canvas, and chains and groups from the stock Celery client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use shopfds_broker::{Outgoing, Registry, TaskContext, TaskError, TaskOptions, WorkerSettings};
use shopfds_protocol::canvas::{Apply, Planned, apply};
use shopfds_protocol::{Signature, TaskState, tasks};
use shopfds_testkit::celery::send_canvas;

use crate::helpers::{
    QUEUE, TestWorker, poll_until, spawn_worker, spawn_worker_with, start_worker, wait_for_depth,
    worker_settings,
};

/// One handler run: what the task was called with, and when it started and ended.
#[derive(Debug, Clone)]
struct Run {
    task: String,
    id: String,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    parent_id: Option<String>,
    group: Option<String>,
    group_index: Option<i64>,
    started: std::time::Instant,
    ended: std::time::Instant,
}

#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<Run>>>);

impl Runs {
    fn all(&self) -> Vec<Run> {
        self.0.lock().unwrap().clone()
    }

    fn of(&self, task: &str) -> Vec<Run> {
        self.all().into_iter().filter(|r| r.task == task).collect()
    }

    /// Registers `name`: sleeps `delay`, records the run, returns `outcome(ctx)`.
    fn register(
        &self,
        registry: &mut Registry,
        name: &str,
        delay: Duration,
        outcome: impl Fn(&TaskContext) -> Result<Value, TaskError> + Send + Sync + 'static,
    ) {
        let runs = self.clone();
        let outcome = Arc::new(outcome);
        registry.register(name, no_retry(), move |ctx| {
            let runs = runs.clone();
            let outcome = outcome.clone();
            async move {
                let started = std::time::Instant::now();
                tokio::time::sleep(delay).await;
                let msg = &ctx.message;
                runs.0.lock().unwrap().push(Run {
                    task: msg.task().to_owned(),
                    id: msg.id().to_owned(),
                    args: msg.args.clone(),
                    kwargs: msg.kwargs.clone(),
                    parent_id: msg.headers.parent_id.clone(),
                    group: msg.headers.group.clone(),
                    group_index: msg.headers.group_index,
                    started,
                    ended: std::time::Instant::now(),
                });
                outcome(&ctx)
            }
        });
    }
}

fn no_retry() -> TaskOptions {
    TaskOptions {
        max_retries: 0,
        ..TaskOptions::default()
    }
}

fn kw(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

fn sig(task: &str, kwargs: Value) -> Signature {
    Signature::new(task, kw(kwargs)).with_option("queue", QUEUE)
}

async fn publish(tw: &TestWorker, planned: &[Planned]) {
    let outgoing: Vec<Outgoing> = planned
        .iter()
        .map(|p| Outgoing::task(&p.message, &p.queue))
        .collect();
    for result in tw.publisher.publish_batch(&outgoing).await {
        result.expect("confirmed publish");
    }
}

/// Waits until every queue in `queues` is empty and stays so a moment: no follow-up is left
/// in flight, so a duplicate would have run by now.
async fn settle(tw: &TestWorker, queues: &[&str]) {
    for queue in queues {
        wait_for_depth(&tw.vhost, queue, |d| d == 0).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for queue in queues {
        wait_for_depth(&tw.vhost, queue, |d| d == 0).await;
    }
}

#[tokio::test]
async fn a_group_runs_each_member_once_under_one_group_id_with_its_index() {
    let runs = Runs::default();
    let mut registry = Registry::new();
    runs.register(&mut registry, "member", Duration::ZERO, |ctx| {
        Ok(ctx.message.kwargs["n"].clone())
    });
    let tw = spawn_worker(registry).await;

    let group = Signature::group((0..5).map(|n| sig("member", json!({ "n": n }))).collect());
    let group_id = group.task_id().unwrap().to_owned();
    let planned = apply(&group, Apply::root()).unwrap();
    publish(&tw, &planned).await;
    for p in &planned {
        tw.wait_for_state(p.message.id(), TaskState::Success).await;
    }
    settle(&tw, &[QUEUE]).await;

    let mut seen = runs.of("member");
    seen.sort_by_key(|r| r.group_index);
    assert_eq!(seen.len(), 5, "{seen:#?}");
    for (i, run) in seen.iter().enumerate() {
        assert_eq!(run.group.as_deref(), Some(group_id.as_str()));
        assert_eq!(run.group_index, Some(i as i64));
        assert_eq!(run.kwargs["n"], json!(i));
    }
}

/// The chord of `n` parts, each returning `part-<i>` after a delay that puts them out of
/// order, and a body that returns how many results it got.
fn chord_registry(runs: &Runs, fail_index: Option<u64>) -> Registry {
    let mut registry = Registry::new();
    runs.register(&mut registry, "part", Duration::ZERO, move |ctx| {
        let i = ctx.message.kwargs["i"].as_u64().unwrap();
        if Some(i) == fail_index {
            return Err(TaskError::permanent("part exploded"));
        }
        Ok(json!(format!("part-{i}")))
    });
    // The delay is per part: later parts finish first.
    let runs_inner = runs.clone();
    registry.register("slow_part", no_retry(), move |ctx| {
        let runs = runs_inner.clone();
        async move {
            let i = ctx.message.kwargs["i"].as_u64().unwrap();
            let started = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(20 * (12 - i.min(12)))).await;
            runs.0.lock().unwrap().push(Run {
                task: "slow_part".into(),
                id: ctx.id().to_owned(),
                args: ctx.message.args.clone(),
                kwargs: ctx.message.kwargs.clone(),
                parent_id: ctx.message.headers.parent_id.clone(),
                group: ctx.message.headers.group.clone(),
                group_index: ctx.message.headers.group_index,
                started,
                ended: std::time::Instant::now(),
            });
            Ok(json!(format!("part-{i}")))
        }
    });
    runs.register(&mut registry, "body", Duration::ZERO, |ctx| {
        Ok(json!(ctx.message.args[0].as_array().map_or(0, Vec::len)))
    });
    runs.register(&mut registry, "on_error", Duration::ZERO, |ctx| {
        Ok(ctx.message.args[0].clone())
    });
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_on_two_workers_runs_its_body_once_with_the_results_in_header_order() {
    const PARTS: u64 = 12;
    let runs = Runs::default();
    let registry = chord_registry(&runs, None);
    let tw = spawn_worker(registry.clone()).await;
    let mut second = start_worker(&tw.broker, &tw.store, registry, worker_settings());

    let header: Vec<Signature> = (0..PARTS)
        .map(|i| sig("slow_part", json!({ "i": i })))
        .collect();
    let body = sig("body", json!({})).with_option("task_id", uuid::Uuid::new_v4().to_string());
    let body_id = body.task_id().unwrap().to_owned();
    let planned = apply(&Signature::chord(header, body), Apply::root()).unwrap();
    assert_eq!(planned.len(), PARTS as usize);
    let group_id = planned[0].message.headers.group.clone().unwrap();
    publish(&tw, &planned).await;
    // A part delivered twice (a redelivery after a lost ack looks the same): counted once.
    publish(&tw, &planned[3..4]).await;

    let record = tw.wait_for_state(&body_id, TaskState::Success).await;
    assert_eq!(record.result, Some(json!(PARTS)));
    settle(&tw, &[QUEUE]).await;

    let parts = runs.of("slow_part");
    assert_eq!(
        parts.len(),
        PARTS as usize + 1,
        "every part ran, one of them twice"
    );
    let bodies = runs.of("body");
    assert_eq!(bodies.len(), 1, "the body ran exactly once: {bodies:#?}");
    let expected: Vec<Value> = (0..PARTS).map(|i| json!(format!("part-{i}"))).collect();
    assert_eq!(
        bodies[0].args[0],
        Value::Array(expected),
        "results in header order"
    );
    // Every part's first run ended before the body started (the duplicate may run later).
    let mut first_end: HashMap<&str, std::time::Instant> = HashMap::new();
    for run in &parts {
        let end = first_end.entry(run.id.as_str()).or_insert(run.ended);
        *end = (*end).min(run.ended);
    }
    assert_eq!(first_end.len(), PARTS as usize);
    assert!(
        first_end.values().all(|end| *end <= bodies[0].started),
        "the body started after every part"
    );
    let chord = tw.store.chords().get(&group_id).await.unwrap().unwrap();
    assert_eq!(
        (chord.done, chord.state.as_str()),
        (PARTS as i32, "SUCCESS")
    );
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_chord_part_fires_the_errbacks_and_the_body_never_runs() {
    let runs = Runs::default();
    let tw = spawn_worker(chord_registry(&runs, Some(1))).await;

    let header: Vec<Signature> = (0..3)
        .map(|i| {
            sig("part", json!({ "i": i })).link_error(sig("on_error", json!({ "for": "part" })))
        })
        .collect();
    let body = sig("body", json!({}))
        .with_option("task_id", uuid::Uuid::new_v4().to_string())
        .link_error(sig("on_error", json!({ "for": "body" })));
    let body_id = body.task_id().unwrap().to_owned();
    let planned = apply(&Signature::chord(header, body), Apply::root()).unwrap();
    let failing_id = planned[1].message.id().to_owned();
    publish(&tw, &planned).await;

    let failure = tw.wait_for_state(&body_id, TaskState::Failure).await;
    let error = failure.error.unwrap();
    assert_eq!(error["exc_type"], "ChordError");
    let message = error["exc_message"].as_str().unwrap();
    assert!(
        message.contains(&failing_id) && message.contains("part exploded"),
        "{message}"
    );
    tw.wait_for_state(&failing_id, TaskState::Failure).await;
    settle(&tw, &[QUEUE]).await;

    assert_eq!(runs.of("part").len(), 3, "the other parts still ran");
    assert!(runs.of("body").is_empty(), "the body must not run");
    let errbacks = runs.of("on_error");
    let mut by_kind: HashMap<String, Vec<&Run>> = HashMap::new();
    for run in &errbacks {
        by_kind
            .entry(run.kwargs["for"].as_str().unwrap().to_owned())
            .or_default()
            .push(run);
    }
    // The failed part's own errback, with the failed task's id (Celery's link_error).
    let part_errbacks = &by_kind["part"];
    assert_eq!(part_errbacks.len(), 1, "{errbacks:#?}");
    assert_eq!(part_errbacks[0].args, vec![json!(failing_id)]);
    assert_eq!(
        part_errbacks[0].parent_id.as_deref(),
        Some(failing_id.as_str())
    );
    // The body's errback, once, with the body's id.
    let body_errbacks = &by_kind["body"];
    assert_eq!(body_errbacks.len(), 1, "{errbacks:#?}");
    assert_eq!(body_errbacks[0].args, vec![json!(body_id)]);
    // The part is dead-lettered like any failed task.
    let dead = tw.dead_letters(1).await;
    assert!(dead[0].reason().contains("part exploded"));
}

#[tokio::test]
async fn a_failed_task_calls_its_errback_with_its_id_and_not_its_callbacks_or_chain() {
    let runs = Runs::default();
    let mut registry = Registry::new();
    runs.register(&mut registry, "fails", Duration::ZERO, |_| {
        Err(TaskError::permanent("invalid input"))
    });
    runs.register(&mut registry, "after", Duration::ZERO, |_| Ok(json!(null)));
    runs.register(&mut registry, "on_error", Duration::ZERO, |_| {
        Ok(json!(null))
    });
    let tw = spawn_worker(registry).await;

    let canvas = Signature::chain(vec![
        sig("fails", json!({}))
            .link(sig("after", json!({ "via": "link" })))
            .link_error(sig("on_error", json!({}))),
        sig("after", json!({ "via": "chain" })),
    ]);
    let planned = apply(&canvas, Apply::root()).unwrap();
    let failed_id = planned[0].message.id().to_owned();
    publish(&tw, &planned).await;
    tw.wait_for_state(&failed_id, TaskState::Failure).await;
    poll_until(
        crate::helpers::WAIT,
        || async { runs.of("on_error").len() },
        |n| *n >= 1,
    )
    .await
    .unwrap();
    settle(&tw, &[QUEUE]).await;

    let errbacks = runs.of("on_error");
    assert_eq!(errbacks.len(), 1);
    assert_eq!(errbacks[0].args, vec![json!(failed_id)]);
    assert_eq!(errbacks[0].parent_id.as_deref(), Some(failed_id.as_str()));
    assert!(
        runs.of("after").is_empty(),
        "neither callback nor chain runs after a failure"
    );
}

/// The scenario's handlers under their task names, on the three queues the canvas uses.
fn order_worker(runs: &Runs) -> (Registry, WorkerSettings) {
    let mut registry = Registry::new();
    let order = |ctx: &TaskContext| ctx.message.kwargs["order_id"].as_str().unwrap().to_owned();
    runs.register(
        &mut registry,
        tasks::SEND_ORDER_CONFIRMATION_EMAIL,
        Duration::ZERO,
        move |ctx| Ok(json!({ "mailed": order(ctx) })),
    );
    runs.register(
        &mut registry,
        tasks::GENERATE_INVOICE_PDF,
        Duration::from_millis(300),
        move |ctx| Ok(json!({ "invoice_url": format!("file:///invoices/{}.pdf", order(ctx)) })),
    );
    runs.register(
        &mut registry,
        tasks::SEND_INVOICE_EMAIL,
        Duration::ZERO,
        |ctx| Ok(json!({ "attached": ctx.message.args.first().cloned() })),
    );
    runs.register(
        &mut registry,
        tasks::REGISTER_SHIPMENT,
        Duration::ZERO,
        move |ctx| Ok(json!({ "tracking": format!("T-{}", order(ctx)) })),
    );
    let mut settings = WorkerSettings::new("canvas-test", &["email", "reports", "default"]);
    settings.concurrency = 4;
    settings.shutdown_grace = Duration::from_millis(300);
    (registry, settings)
}

#[tokio::test]
async fn the_order_canvas_runs_every_part_once_and_mails_the_invoice_after_its_pdf() {
    let runs = Runs::default();
    let (registry, settings) = order_worker(&runs);
    let tw = spawn_worker_with(registry, settings).await;

    let order_id = "ord-5f0c6a52";
    // The scenario's canvas (seed 004), the shape of order-api's plan.
    let call = |task: &str| {
        let mut kwargs = serde_json::Map::new();
        kwargs.insert("order_id".to_owned(), serde_json::json!(order_id));
        Signature::new(task, kwargs)
    };
    let canvas = Signature::group(vec![
        call(tasks::SEND_ORDER_CONFIRMATION_EMAIL),
        Signature::chain(vec![
            call(tasks::GENERATE_INVOICE_PDF),
            call(tasks::SEND_INVOICE_EMAIL),
        ]),
        call(tasks::REGISTER_SHIPMENT),
    ]);
    let planned = apply(&canvas, Apply::root()).unwrap();
    let queues: Vec<&str> = planned.iter().map(|p| p.queue.as_str()).collect();
    assert_eq!(queues, ["email", "reports", "default"]);
    let invoice_email_id = planned[1].message.embed.chain.as_ref().unwrap()[0]
        .task_id()
        .unwrap()
        .to_owned();
    publish(&tw, &planned).await;
    let mailed = tw
        .wait_for_state(&invoice_email_id, TaskState::Success)
        .await;
    for p in &planned {
        tw.wait_for_state(p.message.id(), TaskState::Success).await;
    }
    settle(&tw, &["email", "reports", "default"]).await;

    let all = runs.all();
    let count = |task: &str| all.iter().filter(|r| r.task == task).count();
    for task in [
        tasks::SEND_ORDER_CONFIRMATION_EMAIL,
        tasks::GENERATE_INVOICE_PDF,
        tasks::SEND_INVOICE_EMAIL,
        tasks::REGISTER_SHIPMENT,
    ] {
        assert_eq!(count(task), 1, "{task} ran once: {all:#?}");
    }
    let pdf = &runs.of(tasks::GENERATE_INVOICE_PDF)[0];
    let email = &runs.of(tasks::SEND_INVOICE_EMAIL)[0];
    assert!(
        email.started >= pdf.ended,
        "the invoice is mailed after its PDF exists"
    );
    let pdf_result = json!({ "invoice_url": format!("file:///invoices/{order_id}.pdf") });
    assert_eq!(
        email.args,
        vec![pdf_result.clone()],
        "the PDF's result is passed on"
    );
    assert_eq!(email.kwargs["order_id"], json!(order_id));
    assert_eq!(email.parent_id.as_deref(), Some(pdf.id.as_str()));
    assert_eq!(mailed.result, Some(json!({ "attached": pdf_result })));
    // The group: confirmation, invoice email (end of the chain) and shipment share its id.
    let group = planned[0].message.headers.group.clone().unwrap();
    for (task, index) in [
        (tasks::SEND_ORDER_CONFIRMATION_EMAIL, 0),
        (tasks::SEND_INVOICE_EMAIL, 1),
        (tasks::REGISTER_SHIPMENT, 2),
    ] {
        let run = &runs.of(task)[0];
        assert_eq!(run.group.as_deref(), Some(group.as_str()), "{task}");
        assert_eq!(run.group_index, Some(index), "{task}");
    }
}

#[tokio::test]
async fn a_stock_celery_chain_and_group_run_on_rust_workers() {
    let runs = Runs::default();
    let (registry, mut settings) = order_worker(&runs);
    settings.queues = WorkerSettings::new("canvas-test", &[QUEUE]).queues;
    let tw = spawn_worker_with(registry, settings).await;
    let url = tw.vhost.amqp_url();

    // The stock app sets `task_ignore_result`, so its messages say ignore_result: the runs
    // are what we check, not the result store.
    let chain = send_canvas(&url, "chain", "o-chain", Some(QUEUE))
        .await
        .unwrap();
    assert_eq!(chain.ids.len(), 2);
    let group = send_canvas(&url, "group", "o-group", Some(QUEUE))
        .await
        .unwrap();
    assert_eq!(group.ids.len(), 3);
    let expected: Vec<&String> = chain.ids.iter().chain(&group.ids).collect();
    poll_until(
        crate::helpers::WAIT,
        || async { runs.all() },
        |all: &Vec<Run>| expected.iter().all(|id| all.iter().any(|r| &r.id == *id)),
    )
    .await
    .expect("every task of the chain and the group ran");
    settle(&tw, &[QUEUE]).await;
    let pdf_result = json!({ "invoice_url": "file:///invoices/o-chain.pdf" });

    let by_id: HashMap<String, Run> = runs.all().into_iter().map(|r| (r.id.clone(), r)).collect();
    assert_eq!(by_id.len(), runs.all().len(), "no task ran twice");
    let email = &by_id[&chain.ids[1]];
    assert_eq!(email.args, vec![pdf_result]);
    assert_eq!(email.parent_id.as_deref(), Some(chain.ids[0].as_str()));
    for (index, id) in group.ids.iter().enumerate() {
        let run = &by_id[id];
        assert_eq!(run.group, group.group, "{run:#?}");
        assert_eq!(run.group_index, Some(index as i64));
        assert_eq!(run.kwargs["order_id"], json!("o-group"));
    }
}

#[tokio::test]
async fn a_worker_fans_out_a_group_reached_in_a_chain_and_joins_it_into_the_next_link() {
    let runs = Runs::default();
    let mut registry = Registry::new();
    runs.register(&mut registry, "start", Duration::ZERO, |_| Ok(json!(10)));
    runs.register(&mut registry, "add", Duration::ZERO, |ctx| {
        let n = ctx.message.args[0].as_i64().unwrap();
        Ok(json!(n + ctx.message.kwargs["k"].as_i64().unwrap()))
    });
    runs.register(&mut registry, "total", Duration::ZERO, |ctx| {
        let parts = ctx.message.args[0].as_array().unwrap();
        Ok(json!(parts.iter().filter_map(Value::as_i64).sum::<i64>()))
    });
    let tw = spawn_worker(registry).await;

    // chain(start, group(add 1, add 2, add 3), total): the worker that ran `start` fans the
    // group out with its result, and the group with `total` after it is a chord.
    let total = sig("total", json!({})).with_option("task_id", uuid::Uuid::new_v4().to_string());
    let total_id = total.task_id().unwrap().to_owned();
    let canvas = Signature::chain(vec![
        sig("start", json!({})),
        Signature::group((1..=3).map(|k| sig("add", json!({ "k": k }))).collect()),
        total,
    ]);
    let planned = apply(&canvas, Apply::root()).unwrap();
    assert_eq!(planned.len(), 1, "only `start` is published at first");
    publish(&tw, &planned).await;
    let record = tw.wait_for_state(&total_id, TaskState::Success).await;
    assert_eq!(record.result, Some(json!(11 + 12 + 13)));
    settle(&tw, &[QUEUE]).await;

    let start = &runs.of("start")[0];
    let adds = runs.of("add");
    assert_eq!(adds.len(), 3);
    assert!(adds.iter().all(|r| r.args == vec![json!(10)] && r.parent_id.as_deref() == Some(start.id.as_str())));
    let totals = runs.of("total");
    assert_eq!(totals.len(), 1);
    assert_eq!(
        totals[0].args[0],
        json!([11, 12, 13]),
        "results in group order"
    );
}
