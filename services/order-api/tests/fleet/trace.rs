//! One trace per order, across the real binaries: order-api, fds-worker, email-worker and
//! report-worker run as processes exporting to a real OTLP/gRPC collector of the test
//! (`shopfds_testkit::otlp`); one order is placed, every task runs, the processes are stopped
//! with SIGTERM (which flushes their spans), and the spans the collector received must form one
//! trace, the one `X-Trace-Id` named, with the parent links of every hop:
//!
//! ```text
//! POST /v1/orders (order-api, root)
//! ├── fds.v1.FraudDetection/Score (order-api, client)
//! │   └── fds.v1.FraudDetection/Score (fds-worker, server)
//! ├── publish send_order_confirmation_email → run send_order_confirmation_email → smtp send
//! ├── publish generate_invoice_pdf → run generate_invoice_pdf → render invoice pdf, storage put
//! │                                   └── run send_invoice_email → smtp send
//! └── publish register_shipment → run register_shipment → POST /shipments
//! ```

use std::collections::HashMap;
use std::time::Duration;

use crate::fleet::Fleet;
use shopfds_testkit::otlp::{ReceivedSpan, TestCollector};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_every_service() {
    let collector = TestCollector::spawn().await.unwrap();
    let mut fleet = Fleet::start(Some(&collector.endpoint), &[]).await;

    // Probes and scrapes, which must leave no span.
    for path in ["/healthz", "/readyz", "/metrics"] {
        for ops in &fleet.ops_urls {
            let status = fleet.http.get(format!("{ops}{path}")).send().await.unwrap();
            assert!(status.status().is_success(), "{ops}{path}: {status:?}");
        }
    }

    let response = fleet.post_order().await;
    assert_eq!(response.status(), 201);
    let trace_id = response
        .headers()
        .get("x-trace-id")
        .expect("every response names its trace")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    assert!(
        trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{trace_id}"
    );
    let order: serde_json::Value = response.json().await.unwrap();
    assert_eq!(order["status"], "accepted", "scored in real time: {order}");
    let tasks = order["tasks"].as_object().unwrap().clone();
    for id in tasks.values() {
        fleet.wait_for_success(id.as_str().unwrap(), WAIT).await;
    }
    // A response that is not an order's names its own trace too.
    let missing = fleet
        .get("/v1/orders/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(missing.status(), 404);
    let other = missing.headers()["x-trace-id"].to_str().unwrap().to_owned();
    assert_ne!(other, trace_id);

    fleet.stop().await;

    let expected = [
        "POST /v1/orders",
        "fds.v1.FraudDetection/Score",
        "publish send_order_confirmation_email",
        "publish generate_invoice_pdf",
        "publish register_shipment",
        "run send_order_confirmation_email",
        "run generate_invoice_pdf",
        "run send_invoice_email",
        "run register_shipment",
        "smtp send",
        "render invoice pdf",
        "storage put",
        "POST /shipments",
    ];
    let spans = collector
        .wait_for(WAIT, |spans| {
            let mine: Vec<&ReceivedSpan> =
                spans.iter().filter(|s| s.trace_id == trace_id).collect();
            expected
                .iter()
                .all(|name| mine.iter().any(|s| s.name == *name))
                && mine.iter().filter(|s| s.name == "smtp send").count() >= 2
                && mine
                    .iter()
                    .filter(|s| s.name == "fds.v1.FraudDetection/Score")
                    .count()
                    >= 2
        })
        .await
        .unwrap();
    let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let tree = Tree::new(&trace);

    // The HTTP request is the one root; every other span's parent is in the trace.
    let root = tree.one("order-api", "POST /v1/orders");
    assert!(root.is_root(), "{root:?}");
    assert_eq!(
        root.attributes.get("http.route").map(String::as_str),
        Some("/v1/orders")
    );
    for span in &trace {
        assert!(
            span.is_root() == (span.span_id == root.span_id),
            "{} ({:?}) is a second root",
            span.name,
            span.service_name
        );
        assert!(
            span.is_root() || tree.by_id.contains_key(span.parent_span_id.as_str()),
            "the parent of {} ({:?}) is not in the trace:\n{}",
            span.name,
            span.service_name,
            tree.describe()
        );
    }

    // HTTP → Score (client) → fds-worker (server).
    let client = tree.one("order-api", "fds.v1.FraudDetection/Score");
    tree.assert_parent(client, root);
    let server = tree.one("fds-worker", "fds.v1.FraudDetection/Score");
    tree.assert_parent(server, client);

    // HTTP → publish (the relay, from the outbox row) → task, for each message of the canvas.
    for task in [
        "send_order_confirmation_email",
        "generate_invoice_pdf",
        "register_shipment",
    ] {
        let publish = tree.one("order-api", &format!("publish {task}"));
        tree.assert_parent(publish, root);
        let worker = if task == "generate_invoice_pdf" {
            "report-worker"
        } else {
            "email-worker"
        };
        let run = tree.one(worker, &format!("run {task}"));
        tree.assert_parent(run, publish);
    }
    // The chain's next link is published by the task before it.
    let pdf = tree.one("report-worker", "run generate_invoice_pdf");
    let invoice_mail = tree.one("email-worker", "run send_invoice_email");
    tree.assert_parent(invoice_mail, pdf);

    // Each task's own work.
    tree.assert_parent(tree.one("report-worker", "render invoice pdf"), pdf);
    tree.assert_parent(tree.one("report-worker", "storage put"), pdf);
    let confirmation = tree.one("email-worker", "run send_order_confirmation_email");
    let mut smtp_parents: Vec<&str> = trace
        .iter()
        .filter(|s| s.name == "smtp send")
        .map(|s| s.parent_span_id.as_str())
        .collect();
    smtp_parents.sort_unstable();
    let mut mail_tasks = vec![confirmation.span_id.as_str(), invoice_mail.span_id.as_str()];
    mail_tasks.sort_unstable();
    assert_eq!(
        smtp_parents, mail_tasks,
        "one SMTP send under each mail task"
    );
    let shipment = tree.one("email-worker", "run register_shipment");
    tree.assert_parent(tree.one("email-worker", "POST /shipments"), shipment);

    // Every service names itself and its version.
    for service in ["order-api", "fds-worker", "email-worker", "report-worker"] {
        let span = trace
            .iter()
            .find(|s| s.service_name.as_deref() == Some(service))
            .unwrap_or_else(|| panic!("no span of {service}"));
        assert_eq!(
            span.service_version.as_deref(),
            Some(env!("CARGO_PKG_VERSION")),
            "{service}"
        );
    }

    // Probes, scrapes and gRPC health checks made no span, in any trace.
    for span in &spans {
        let probe = ["/healthz", "/readyz", "/metrics", "grpc.health"]
            .iter()
            .any(|p| span.name.contains(p) || span.attributes.values().any(|v| v.contains(p)));
        assert!(!probe, "a probe was traced: {span:?}");
    }
}

/// The spans of one trace by id.
struct Tree<'a> {
    spans: &'a [&'a ReceivedSpan],
    by_id: HashMap<&'a str, &'a ReceivedSpan>,
}

impl<'a> Tree<'a> {
    fn new(spans: &'a [&'a ReceivedSpan]) -> Tree<'a> {
        let by_id = spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
        Tree { spans, by_id }
    }

    /// The one span `name` of `service`.
    fn one(&self, service: &str, name: &str) -> &'a ReceivedSpan {
        let found: Vec<&&ReceivedSpan> = self
            .spans
            .iter()
            .filter(|s| s.name == name && s.service_name.as_deref() == Some(service))
            .collect();
        assert_eq!(found.len(), 1, "{service}: {name}:\n{}", self.describe());
        found[0]
    }

    fn assert_parent(&self, child: &ReceivedSpan, parent: &ReceivedSpan) {
        assert_eq!(
            child.parent_span_id,
            parent.span_id,
            "{} ({:?}) should be a child of {} ({:?}):\n{}",
            child.name,
            child.service_name,
            parent.name,
            parent.service_name,
            self.describe()
        );
    }

    /// `service: name  span ← parent`, one line per span.
    fn describe(&self) -> String {
        self.spans
            .iter()
            .map(|s| {
                format!(
                    "{}: {}  {} ← {}",
                    s.service_name.as_deref().unwrap_or("?"),
                    s.name,
                    s.span_id,
                    s.parent_span_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
