//! `generate_invoice_pdf` on the real report-worker: the stored PDF's text (`pdftotext`) holds
//! the order id, its Korean lines, the totals with the VAT they include and both addresses; the
//! order records the path; running it again leaves one object; a blocked order gets none; an
//! unknown order is dead-lettered with the reason.

use serde_json::json;
use shopfds_protocol::names::REASON_HEADER;
use shopfds_protocol::{TaskState, tasks};

use crate::helpers::{Options, line, pdf_text, spawn_report_worker};

#[tokio::test]
async fn an_invoice_holds_the_lines_totals_and_addresses_and_is_written_once() {
    let mut app = spawn_report_worker(Options::default()).await;
    let order = app
        .order(
            "2026-11-02T01:00:00Z",
            "accepted",
            vec![
                line("KB-101", "무선 키보드", 2, 45_000),
                line("MS-202", "무선 마우스", 1, 25_000),
            ],
        )
        .await;
    let first = app
        .send(tasks::GENERATE_INVOICE_PDF, json!({"order_id": order}))
        .await;
    let record = app.wait_for_state(first.id(), TaskState::Success).await;
    let path = format!("invoices/{order}.pdf");
    let result = record.result.unwrap();
    assert_eq!(result["invoice"], path.as_str());
    assert_eq!(result["order_id"], order.to_string());

    let text = pdf_text(&app.stored(&path));
    for expected in [
        order.to_string().as_str(),
        "청구서 / Invoice",
        "무선 키보드",
        "무선 마우스",
        "KB-101",
        "₩45,000",
        "₩90,000",
        "₩115,000",
        "₩10,455",
        "₩104,545",
        "세종대로 110",
        "04524",
        "minsu.kim@example.com",
        "김민수",
        "2026-11-02 10:00 (KST)",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    let stored = app.store.orders().get(order).await.unwrap().unwrap();
    assert_eq!(stored.invoice_url.as_deref(), Some(path.as_str()));

    // Again (a redelivery, a replay): the same object, still one.
    let again = app
        .send(tasks::GENERATE_INVOICE_PDF, json!({"order_id": order}))
        .await;
    app.wait_for_state(again.id(), TaskState::Success).await;
    let dir = app.storage.as_ref().unwrap().path().join("invoices");
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_blocked_order_gets_no_invoice_and_an_unknown_one_is_dead_lettered() {
    let mut app = spawn_report_worker(Options::default()).await;
    let blocked = app
        .order(
            "2026-11-02T01:00:00Z",
            "blocked",
            vec![line("KB-101", "무선 키보드", 1, 45_000)],
        )
        .await;
    let msg = app
        .send(tasks::GENERATE_INVOICE_PDF, json!({"order_id": blocked}))
        .await;
    let record = app.wait_for_state(msg.id(), TaskState::Success).await;
    assert_eq!(record.result.unwrap()["status"], "not_generated");
    assert!(
        !app.storage
            .as_ref()
            .unwrap()
            .path()
            .join("invoices")
            .exists()
    );

    let unknown = uuid::Uuid::new_v4();
    let msg = app
        .send(tasks::GENERATE_INVOICE_PDF, json!({"order_id": unknown}))
        .await;
    let record = app.wait_for_state(msg.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0);
    let dead = app.take("failed.reports", 1).await;
    let reason = dead[0][REASON_HEADER]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("not found"), "{reason}");
    app.stop().await;
}
