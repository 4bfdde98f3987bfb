//! The stock Python stubs (`interop/python/shopfds_celery.py`) have the signatures of the Rust
//! argument types: a Python caller who follows a stub sends what a Rust worker binds, and a
//! stock Python worker running the stubs accepts what a Rust producer sends.
//!
//! Python introspects every task of `shopfds_celery.app` (`inspect.signature(task.run)`, `self`
//! left out; Celery's own `celery.*` tasks and the test-only `interop.*` ones skipped) and prints the parameters; they must equal
//! `shopfds_protocol::TASK_SIGNATURES`: the same task names, parameter names in the same order,
//! the same required parameters, and no `*args`/`**kwargs` (a Rust type cannot take them).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::Value;
use shopfds_protocol::{TASK_SIGNATURES, tasks};
use shopfds_testkit::python;

const INTROSPECT: &str = r#"
import inspect, json
from shopfds_celery import app

out = {}
for name, task in sorted(app.tasks.items()):
    if name.startswith(("celery.", "interop.")):
        continue
    params = list(inspect.signature(task.run).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    out[name] = [
        {
            "name": p.name,
            "required": p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD),
            "kind": p.kind.name,
        }
        for p in params
    ]
print(json.dumps(out))
"#;

/// A parameter as Python sees it.
#[derive(Debug, PartialEq)]
struct Param {
    name: String,
    required: bool,
}

fn python_signatures() -> BTreeMap<String, Vec<(Param, String)>> {
    let stdout = python::run_snippet(INTROSPECT).expect("python introspects shopfds_celery");
    let all: BTreeMap<String, Vec<Value>> =
        serde_json::from_str(stdout.trim()).expect("the snippet prints a JSON object");
    all.into_iter()
        .map(|(name, params)| {
            let params = params
                .into_iter()
                .map(|p| {
                    (
                        Param {
                            name: p["name"].as_str().unwrap().to_owned(),
                            required: p["required"].as_bool().unwrap(),
                        },
                        p["kind"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (name, params)
        })
        .collect()
}

#[test]
fn every_python_stub_has_the_signature_of_its_rust_type() {
    let python = python_signatures();
    let mut problems = Vec::new();

    let ours: Vec<&str> = TASK_SIGNATURES.iter().map(|sig| sig.name).collect();
    for name in python.keys() {
        if !ours.contains(&name.as_str()) {
            problems.push(format!("{name}: a Python stub with no Rust argument type"));
        }
    }
    for sig in &TASK_SIGNATURES {
        let Some(params) = python.get(sig.name) else {
            problems.push(format!("{}: no Python stub", sig.name));
            continue;
        };
        for (param, kind) in params {
            if kind.starts_with("VAR_") {
                problems.push(format!(
                    "{}: parameter {} is {kind}, which no Rust type can take",
                    sig.name, param.name
                ));
            }
        }
        let theirs: Vec<&Param> = params.iter().map(|(p, _)| p).collect();
        let expected: Vec<Param> = sig
            .params
            .iter()
            .map(|name| Param {
                name: (*name).to_owned(),
                required: sig.is_required(name),
            })
            .collect();
        if theirs != expected.iter().collect::<Vec<_>>() {
            problems.push(format!(
                "{}: Python has {}, Rust has {}",
                sig.name,
                describe(theirs.into_iter()),
                describe(expected.iter())
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "interop/python/shopfds_celery.py and shopfds_protocol::TASK_SIGNATURES differ:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_table_covers_every_task_name() {
    let names: Vec<&str> = TASK_SIGNATURES.iter().map(|sig| sig.name).collect();
    assert_eq!(names, tasks::ALL);
}

/// `(a, b=…)`: required parameters bare, optional ones with `=…`.
fn describe<'a>(params: impl Iterator<Item = &'a Param>) -> String {
    let inner: Vec<String> = params
        .map(|p| {
            if p.required {
                p.name.clone()
            } else {
                format!("{}=…", p.name)
            }
        })
        .collect();
    format!("({})", inner.join(", "))
}
