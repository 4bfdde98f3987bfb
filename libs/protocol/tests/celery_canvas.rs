//! Canvases captured from a stock Celery 5.5.3 client (`interop/python/canvas.py capture`: a
//! group, a chord, a chain ending in a group, the order canvas, link + link_error): the builders
//! of `shopfds_protocol::canvas`, given the same task ids, put the same messages on the wire.
//!
//! Normalised before comparing: `reply_to` (the client's result queue, which we don't have),
//! `origin`, `ignore_result` (the capture app sets `task_ignore_result`) and the `chord_size`
//! we add to a chord body.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::{Map, Value, json};
use shopfds_protocol::canvas::{Apply, CHORD_SIZE_KEY, Planned, apply};
use shopfds_protocol::{Signature, TaskMessage, tasks};

struct Captured {
    queue: String,
    headers: Map<String, Value>,
    body: Value,
}

fn fixture(name: &str) -> (String, Vec<Captured>) {
    let all: Value = serde_json::from_str(include_str!("fixtures/celery-5.5.3-canvas.json"))
        .expect("fixture is JSON");
    let entry = &all[name];
    let messages = entry["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| Captured {
            queue: m["queue"].as_str().unwrap().to_owned(),
            headers: m["headers"].as_object().cloned().unwrap(),
            body: serde_json::from_str(m["body"].as_str().unwrap()).unwrap(),
        })
        .collect();
    (entry["result_id"].as_str().unwrap().to_owned(), messages)
}

fn strip(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("reply_to");
            map.remove(CHORD_SIZE_KEY);
            map.values_mut().for_each(strip);
        }
        Value::Array(list) => list.iter_mut().for_each(strip),
        _ => {}
    }
}

const HEADERS: [&str; 13] = [
    "lang",
    "task",
    "id",
    "root_id",
    "parent_id",
    "group",
    "group_index",
    "retries",
    "eta",
    "expires",
    "timelimit",
    "argsrepr",
    "kwargsrepr",
];

/// Every captured message has a twin among ours: same queue, headers and body.
fn assert_same(ours: &[Planned], captured: &[Captured]) {
    assert_eq!(ours.len(), captured.len(), "number of messages");
    for theirs in captured {
        let id = theirs.headers["id"].as_str().unwrap();
        let mine = ours
            .iter()
            .find(|p| p.message.id() == id)
            .unwrap_or_else(|| panic!("no message of ours has id {id}"));
        assert_eq!(mine.queue, theirs.queue, "queue of {id}");
        let headers = mine.message.headers_map();
        for key in HEADERS {
            assert_eq!(
                headers.get(key),
                theirs.headers.get(key),
                "{id}: header {key}"
            );
        }
        let mut our_body: Value = serde_json::from_slice(&mine.message.body()).unwrap();
        let mut their_body = theirs.body.clone();
        strip(&mut our_body);
        strip(&mut their_body);
        assert_eq!(
            String::from_utf8(shopfds_protocol::pyjson::to_vec(&our_body).unwrap()).unwrap(),
            String::from_utf8(shopfds_protocol::pyjson::to_vec(&their_body).unwrap()).unwrap(),
            "{id}: body"
        );
    }
}

fn order(id: &str) -> Map<String, Value> {
    json!({ "order_id": id }).as_object().cloned().unwrap()
}

fn by_task<'a>(captured: &'a [Captured], task: &str) -> Vec<&'a Captured> {
    captured
        .iter()
        .filter(|c| c.headers["task"] == task)
        .collect()
}

fn id_of(c: &Captured) -> String {
    c.headers["id"].as_str().unwrap().to_owned()
}

/// The signature options of the first element of a captured body's `embed.chain`.
fn chain_next(c: &Captured) -> Value {
    c.body[2]["chain"][0].clone()
}

#[test]
fn a_group_is_one_message_per_member_with_the_group_id_and_index() {
    let (group_id, captured) = fixture("group");
    let email = by_task(&captured, tasks::SEND_ORDER_CONFIRMATION_EMAIL)[0];
    let shipment = by_task(&captured, tasks::REGISTER_SHIPMENT)[0];
    let canvas = Signature::group(vec![
        Signature::new(tasks::SEND_ORDER_CONFIRMATION_EMAIL, order("o-1"))
            .with_option("task_id", id_of(email)),
        Signature::new(tasks::REGISTER_SHIPMENT, order("o-1"))
            .with_option("task_id", id_of(shipment)),
    ])
    .with_option("task_id", group_id.clone());
    let ours = apply(&canvas, Apply::root()).unwrap();
    assert_same(&ours, &captured);
    assert!(
        ours.iter()
            .all(|p| p.message.headers.group.as_deref() == Some(&*group_id))
    );
}

#[test]
fn a_chord_header_carries_the_body_and_the_body_its_size() {
    let (body_id, captured) = fixture("chord");
    let group_id = captured[0].headers["group"].as_str().unwrap().to_owned();
    let ids: Vec<String> = captured.iter().map(id_of).collect();
    let mut header = Signature::group(
        ["o-1", "o-2"]
            .iter()
            .zip(&ids)
            .map(|(o, id)| {
                Signature::new(tasks::REGISTER_SHIPMENT, order(o))
                    .with_option("task_id", id.clone())
            })
            .collect(),
    )
    .with_option("task_id", group_id);
    header.options.remove("root_id");
    let body = Signature::new(tasks::SEND_ORDER_CONFIRMATION_EMAIL, order("o-9"))
        .with_option("task_id", body_id.clone());
    let mut canvas = Signature::chord(Vec::new(), body);
    canvas
        .kwargs
        .insert("header".into(), serde_json::to_value(header).unwrap());
    let ours = apply(&canvas, Apply::root()).unwrap();
    assert_same(&ours, &captured);
    for part in &ours {
        let body = part.message.embed.chord.as_ref().expect("chord body");
        assert_eq!(body.task_id(), Some(body_id.as_str()));
        assert_eq!(
            body.chord_size(),
            Some(2),
            "the body says how many parts to wait for"
        );
    }
}

#[test]
fn a_chain_ending_in_a_group_embeds_the_group_signature() {
    let (_, captured) = fixture("chain_with_group");
    let head = &captured[0];
    let group = chain_next(head);
    let members = group["kwargs"]["tasks"].as_array().unwrap();
    let canvas = Signature::chain(vec![
        Signature::new(tasks::GENERATE_INVOICE_PDF, order("o-1"))
            .with_option("task_id", id_of(head)),
        Signature::group(vec![
            Signature::new(tasks::SEND_INVOICE_EMAIL, order("o-1"))
                .with_option("task_id", members[0]["options"]["task_id"].clone()),
            Signature::new(tasks::REGISTER_SHIPMENT, order("o-1"))
                .with_option("task_id", members[1]["options"]["task_id"].clone()),
        ])
        .with_option("task_id", group["options"]["task_id"].clone())
        .with_option("root_id", Value::Null)
        .with_option("parent_id", Value::Null),
    ]);
    let ours = apply(&canvas, Apply::root()).unwrap();
    assert_same(&ours, &captured);
}

/// The scenario's canvas (seed 004) as the Python fixture builds it; order-api's plan
/// (`order_api::domain::plan`) is this shape, its members made immutable where a parent's
/// result must not become an argument (which changes nothing in these messages).
fn scenario_canvas(order_id: &str) -> Signature {
    Signature::group(vec![
        Signature::new(tasks::SEND_ORDER_CONFIRMATION_EMAIL, order(order_id)),
        Signature::chain(vec![
            Signature::new(tasks::GENERATE_INVOICE_PDF, order(order_id)),
            Signature::new(tasks::SEND_INVOICE_EMAIL, order(order_id)),
        ]),
        Signature::new(tasks::REGISTER_SHIPMENT, order(order_id)),
    ])
}

#[test]
fn the_order_canvas_is_what_celery_makes_of_the_scenario() {
    let (group_id, captured) = fixture("order_canvas");
    let email = by_task(&captured, tasks::SEND_ORDER_CONFIRMATION_EMAIL)[0];
    let pdf = by_task(&captured, tasks::GENERATE_INVOICE_PDF)[0];
    let shipment = by_task(&captured, tasks::REGISTER_SHIPMENT)[0];
    let invoice_email_id = chain_next(pdf)["options"]["task_id"].clone();

    // The builder with the captured ids put in place of its fresh ones.
    let mut canvas = scenario_canvas("o-1").with_option("task_id", group_id.clone());
    let mut members: Vec<Signature> =
        serde_json::from_value(canvas.kwargs["tasks"].clone()).unwrap();
    members[0] = members[0].clone().with_option("task_id", id_of(email));
    let mut links: Vec<Signature> =
        serde_json::from_value(members[1].kwargs["tasks"].clone()).unwrap();
    links[0] = links[0].clone().with_option("task_id", id_of(pdf));
    links[1] = links[1].clone().with_option("task_id", invoice_email_id);
    members[1] = Signature::chain(links);
    members[2] = members[2].clone().with_option("task_id", id_of(shipment));
    canvas
        .kwargs
        .insert("tasks".into(), serde_json::to_value(members).unwrap());

    let ours = apply(&canvas, Apply::root()).unwrap();
    assert_same(&ours, &captured);
    let queues: Vec<&str> = ours.iter().map(|p| p.queue.as_str()).collect();
    assert_eq!(queues, ["email", "reports", "default"]);
}

#[test]
fn link_and_link_error_become_callbacks_and_errbacks() {
    let (id, captured) = fixture("link_and_link_error");
    let canvas = Signature::new(tasks::REGISTER_SHIPMENT, order("o-1"))
        .with_option("task_id", id)
        .link_error(Signature::new(tasks::SEND_INVOICE_EMAIL, order("on-error")))
        .link(Signature::new(
            tasks::SEND_INVOICE_EMAIL,
            order("on-success"),
        ));
    let ours = apply(&canvas, Apply::root()).unwrap();
    assert_same(&ours, &captured);
}

#[test]
fn what_follows_a_task_gets_its_result_or_its_id_first() {
    let parent = TaskMessage::new(tasks::GENERATE_INVOICE_PDF, order("o-1"));
    let next = Signature::new(tasks::SEND_INVOICE_EMAIL, order("o-1"));
    let after = apply(&next, Apply::after(&parent.headers, vec![json!("inv.pdf")])).unwrap();
    let child = &after[0].message;
    assert_eq!(child.args, vec![json!("inv.pdf")]);
    assert_eq!(child.headers.argsrepr.as_deref(), Some("('inv.pdf',)"));
    assert_eq!(child.headers.parent_id.as_deref(), Some(parent.id()));
    assert_eq!(child.headers.root_id.as_deref(), Some(parent.id()));

    let immutable = next.clone().immutable();
    let after = apply(&immutable, Apply::after(&parent.headers, vec![json!("x")])).unwrap();
    assert!(
        after[0].message.args.is_empty(),
        "an immutable signature ignores the result"
    );

    // A chain followed by a group on a worker: a chord whose body is the rest.
    let group = Signature::group(vec![next.clone(), next.clone()]);
    let body = Signature::new(tasks::REGISTER_SHIPMENT, order("o-1"));
    let chain = Signature::chain(vec![group, body]);
    let parts = apply(&chain, Apply::root()).unwrap();
    assert_eq!(parts.len(), 2);
    let chord = parts[0].message.embed.chord.as_ref().expect("chord body");
    assert_eq!(chord.task, tasks::REGISTER_SHIPMENT);
    assert_eq!(chord.chord_size(), Some(2));
    assert_eq!(
        parts[0].message.headers.group,
        parts[1].message.headers.group
    );
    assert_eq!(parts[1].message.headers.group_index, Some(1));
}
