//! Celery message protocol v1, converted into the v2 [`TaskMessage`] on the way in, so the rest
//! of the runtime never sees v1.
//!
//! Stock Celery 5.5 still sends v1 when configured with `task_protocol=1`
//! (`celery/app/amqp.py` `as_task_v1`): no AMQP header `task`, and a JSON body object
//! `{task, id, args, kwargs, group, group_index, retries, eta, expires, utc, callbacks, errbacks,
//! timelimit, taskset, chord}`; a chain travels as link `callbacks`. The conversion is the one
//! Celery's own worker does (`celery/worker/strategy.py` `proto1_to_proto2`):
//!
//! | v1 body field | becomes |
//! |---|---|
//! | `task`, `id` (a string, a non-empty string) | headers `task`, `id` |
//! | `taskset` (when the field is there; else `group`) | header `group` |
//! | `group_index`, `retries`, `eta`, `expires`, `timelimit` (`[hard, soft]`), `root_id`, `parent_id`, `shadow`, `lang`, `origin`, `argsrepr`, `kwargsrepr`, `ignore_result` | the header of the same name |
//! | `args` (a list; missing or null = `[]`), `kwargs` (a mapping; missing or null = `{}`) | body args, kwargs |
//! | `callbacks`, `errbacks`, `chord` | the embed (`chain` stays empty) |
//! | `utc` | dropped: a naive `eta`/`expires` is read as UTC, as in v2 |
//! | any other field | an extra header, kept |
//!
//! `argsrepr` and `kwargsrepr`, which v1 does not send, are Python's `repr` of args and kwargs,
//! as Celery's worker computes them. The AMQP headers of a v1 delivery (`traceparent`,
//! `x-death`, a dead-letter reason) are kept as extra headers; a body field of the same name wins.
//!
//! The hybrid form, v2 headers over a v1 object body (`hybrid_to_proto2`, e.g. a v1 message
//! republished with new headers), is read the same way except that the headers win over the
//! body and `taskset` is ignored.
//!
//! A malformed body gives [`ProtocolError::InvalidV1Field`] naming the field (in the hybrid
//! form, a bad header gives `InvalidHeader` as for v2); nothing here panics.

use serde_json::{Map, Value};

use crate::decode::{parse_headers, received_properties};
use crate::message::{Embed, ProtocolError, Signature, TaskMessage};
use crate::pyjson;

/// Converts a v1 body object (with the delivery's AMQP headers) into a v2 message.
pub(crate) fn decode(
    amqp_headers: Map<String, Value>,
    mut body: Map<String, Value>,
) -> Result<TaskMessage, ProtocolError> {
    let hybrid = amqp_headers.contains_key("task");
    let args = match body.remove("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(args)) => args,
        Some(other) => return Err(invalid("args", format!("{other} is not a list"))),
    };
    let kwargs = match body.remove("kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(kwargs)) => kwargs,
        Some(other) => return Err(invalid("kwargs", format!("{other} is not a mapping"))),
    };
    let embed = Embed {
        callbacks: signatures(&mut body, "callbacks")?,
        errbacks: signatures(&mut body, "errbacks")?,
        chain: None,
        chord: match body.remove("chord") {
            None | Some(Value::Null) => None,
            Some(chord) => Some(
                serde_json::from_value::<Signature>(chord)
                    .map_err(|e| invalid("chord", e.to_string()))?,
            ),
        },
        extra: Map::new(),
    };
    // Celery's worker ignores both: a v1 chain travels as callbacks, and `utc` only says how
    // the sender wrote a naive eta.
    body.remove("chain");
    body.remove("utc");
    if let Some(taskset) = body.remove("taskset")
        && !hybrid
    {
        body.insert("group".to_owned(), taskset);
    }
    if !body.contains_key("argsrepr") {
        let repr = pyjson::repr(&Value::Array(args.clone()));
        body.insert("argsrepr".to_owned(), Value::String(repr));
    }
    if !body.contains_key("kwargsrepr") {
        let repr = pyjson::repr(&Value::Object(kwargs.clone()));
        body.insert("kwargsrepr".to_owned(), Value::String(repr));
    }
    let mut headers = body;
    for (name, value) in amqp_headers {
        if hybrid {
            headers.insert(name, value);
        } else {
            headers.entry(name).or_insert(value);
        }
    }
    let headers = parse_headers(headers).map_err(|e| match e {
        ProtocolError::InvalidHeader { header, message } if !hybrid => invalid(header, message),
        other => other,
    })?;
    Ok(TaskMessage {
        properties: received_properties(&headers.id),
        headers,
        args,
        kwargs,
        embed,
    })
}

fn signatures(
    body: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<Signature>>, ProtocolError> {
    match body.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(list) => serde_json::from_value(list)
            .map(Some)
            .map_err(|e| invalid(field, format!("not a list of signatures: {e}"))),
    }
}

fn invalid(field: &str, message: String) -> ProtocolError {
    ProtocolError::InvalidV1Field {
        field: field.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode_json(headers: Value, body: Value) -> Result<TaskMessage, ProtocolError> {
        let headers = headers.as_object().cloned().unwrap_or_default();
        TaskMessage::decode(
            Some("application/json"),
            Some("utf-8"),
            headers,
            body.to_string().as_bytes(),
        )
    }

    fn minimal() -> Value {
        json!({"task": "register_shipment", "id": "t-1"})
    }

    #[test]
    fn a_minimal_v1_body_gets_celerys_defaults() {
        let msg = decode_json(json!({}), minimal()).unwrap();
        assert_eq!(msg.task(), "register_shipment");
        assert_eq!(msg.id(), "t-1");
        assert!(msg.args.is_empty() && msg.kwargs.is_empty());
        assert_eq!(msg.headers.retries, 0);
        assert_eq!(msg.headers.argsrepr.as_deref(), Some("[]"));
        assert_eq!(msg.headers.kwargsrepr.as_deref(), Some("{}"));
        assert_eq!(msg.embed, Embed::default());
        assert_eq!(msg.properties.correlation_id, "t-1");
        // What the runtime republishes is v2.
        assert_eq!(
            String::from_utf8(msg.body()).unwrap(),
            r#"[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
        );
    }

    #[test]
    fn amqp_headers_are_kept_but_the_body_wins() {
        let headers = json!({"traceparent": "00-abc-def-01", "retries": 7});
        let mut body = minimal();
        body["retries"] = json!(2);
        let msg = decode_json(headers, body).unwrap();
        assert_eq!(msg.headers.retries, 2);
        assert_eq!(
            msg.headers.extra.get("traceparent"),
            Some(&json!("00-abc-def-01"))
        );
    }

    #[test]
    fn hybrid_headers_win_over_the_body() {
        let headers = json!({"task": "register_shipment", "id": "t-2", "retries": 3});
        let body = json!({"id": "t-1", "args": ["x"], "kwargs": {}, "retries": 1,
                          "taskset": "ignored", "group": "g-1"});
        let msg = decode_json(headers, body).unwrap();
        assert_eq!(msg.id(), "t-2");
        assert_eq!(msg.headers.retries, 3);
        assert_eq!(msg.headers.group.as_deref(), Some("g-1"));
        assert_eq!(msg.args, vec![json!("x")]);
    }

    #[test]
    fn taskset_is_the_group_even_over_group() {
        let mut body = minimal();
        body["group"] = json!("stale");
        body["taskset"] = json!("g-9");
        let msg = decode_json(json!({}), body).unwrap();
        assert_eq!(msg.headers.group.as_deref(), Some("g-9"));
        assert!(!msg.headers.extra.contains_key("taskset"));
        assert!(!msg.headers.extra.contains_key("utc"));
    }

    #[test]
    fn malformed_v1_bodies_name_the_field() {
        let field_of = |body: Value| match decode_json(json!({}), body) {
            Err(ProtocolError::InvalidV1Field { field, .. }) => field,
            other => panic!("expected InvalidV1Field, got {other:?}"),
        };
        let with = |key: &str, value: Value| {
            let mut body = minimal();
            body[key] = value;
            body
        };
        assert_eq!(field_of(with("task", json!(42))), "task");
        assert_eq!(field_of(with("task", Value::Null)), "task");
        assert_eq!(field_of(json!({"task": "x"})), "id");
        assert_eq!(field_of(with("id", json!(""))), "id");
        assert_eq!(field_of(with("args", json!({"a": 1}))), "args");
        assert_eq!(field_of(with("kwargs", json!([1]))), "kwargs");
        assert_eq!(field_of(with("eta", json!("tomorrow"))), "eta");
        assert_eq!(field_of(with("expires", json!(12))), "expires");
        assert_eq!(field_of(with("retries", json!("two"))), "retries");
        assert_eq!(field_of(with("timelimit", json!("5"))), "timelimit");
        assert_eq!(
            field_of(with("callbacks", json!([{"no": "task"}]))),
            "callbacks"
        );
        assert_eq!(field_of(with("errbacks", json!("x"))), "errbacks");
        assert_eq!(field_of(with("chord", json!([]))), "chord");
    }

    #[test]
    fn what_is_neither_v1_nor_v2_is_refused_clearly() {
        for body in [json!({"id": "t-1"}), json!("text"), json!(3), Value::Null] {
            assert_eq!(
                decode_json(json!({}), body),
                Err(ProtocolError::NotProtocolV2)
            );
        }
        let err = decode_json(json!({"task": "x", "id": "t"}), json!("text"));
        assert!(matches!(err, Err(ProtocolError::InvalidBody(_))), "{err:?}");
    }
}
