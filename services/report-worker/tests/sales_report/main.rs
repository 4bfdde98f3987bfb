//! `generate_sales_report` and `generate_daily_sales_report` on the real report-worker, against
//! the real PostgreSQL, RabbitMQ and an SMTP server, with a storage directory:
//!
//! - seeded orders on known days in Asia/Seoul (one blocked, two just outside the period): the
//!   stored PDF's text (`pdftotext`) has the right revenue, order count, average basket and top
//!   product, the mail carries it, the result has the totals; a report for a user_id that is no
//!   address, without REPORT_MAIL_TO, is stored and not mailed;
//! - a start after the end and a period over 366 days: FAILURE at once, no retry, dead-lettered
//!   with the reason; a worker without storage refuses naming STORAGE_DIR and STORAGE_URL;
//! - the daily report covers yesterday in Seoul and goes to REPORT_MAIL_TO;
//! - `generate_invoice_pdf` ([`invoice`]): the invoice's text, written once, none for a blocked
//!   order, an unknown order dead-lettered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod invoice;

use chrono::Utc;
use helpers::{Options, TestApp, line, pdf_text, spawn_report_worker, value_of};
use serde_json::json;
use shopfds_protocol::names::REASON_HEADER;
use shopfds_protocol::{TaskState, tasks};

/// Orders around the period 2026-11-02 to 2026-11-03 in Seoul (UTC+9):
/// inside, ₩90,000 + ₩30,000 (review) + ₩75,000 = ₩195,000 in 3 orders (average ₩65,000), KB-101
/// the top product (3 units, ₩135,000), and a blocked ₩2,000,000 order; outside, ₩500,000 the
/// minute before and ₩700,000 the minute after.
async fn seed(app: &TestApp) {
    let keyboard = |n| line("KB-101", "무선 키보드", n, 45_000);
    let mouse = |n| line("MS-202", "무선 마우스", n, 30_000);
    // 2026-11-01 23:59 in Seoul.
    app.order(
        "2026-11-01T14:59:00Z",
        "accepted",
        vec![line("OUT-1", "이전 상품", 1, 500_000)],
    )
    .await;
    // 2026-11-02 10:00 and 23:30 in Seoul.
    app.order("2026-11-02T01:00:00Z", "accepted", vec![keyboard(2)])
        .await;
    app.order("2026-11-02T14:30:00Z", "review", vec![mouse(1)])
        .await;
    // 2026-11-03 00:30 and 12:00 in Seoul.
    app.order(
        "2026-11-02T15:30:00Z",
        "accepted",
        vec![keyboard(1), mouse(1)],
    )
    .await;
    app.order(
        "2026-11-03T03:00:00Z",
        "blocked",
        vec![line("TV-900", "대형 TV", 1, 2_000_000)],
    )
    .await;
    // 2026-11-04 00:00 in Seoul.
    app.order(
        "2026-11-03T15:00:00Z",
        "accepted",
        vec![line("OUT-2", "이후 상품", 1, 700_000)],
    )
    .await;
}

#[tokio::test]
async fn the_pdf_of_seeded_orders_has_the_right_totals_and_is_mailed() {
    let mut app = spawn_report_worker(Options::default()).await;
    seed(&app).await;

    let msg = app
        .sales_report(json!({"start_date": "2026-11-02", "end_date": "2026-11-03", "user_id": "reports@example.com"}))
        .await;
    let record = app.wait_for_state(msg.id(), TaskState::Success).await;
    let result = record.result.unwrap();
    assert_eq!(result["status"], "completed");
    let pdf_path = result["pdf_path"].as_str().unwrap();
    assert_eq!(
        pdf_path,
        format!("reports/sales-2026-11-02_2026-11-03-{}.pdf", msg.id())
    );
    assert_eq!(
        result["period"],
        json!({"start_date": "2026-11-02", "end_date": "2026-11-03", "days": 2, "time_zone": "Asia/Seoul"})
    );
    let totals = &result["totals"];
    assert_eq!(totals["orders"], 3);
    assert_eq!(totals["blocked_orders"], 1);
    assert_eq!(totals["revenue"], json!({"KRW": 195_000}));
    assert_eq!(totals["average_basket"], json!({"KRW": 65_000}));
    assert_eq!(totals["top_product"]["sku"], "KB-101");
    assert_eq!(totals["top_product"]["revenue"], 135_000);
    assert_eq!(
        totals["fds_decisions"],
        json!({"APPROVE": 2, "REVIEW": 1, "BLOCK": 1})
    );
    assert_eq!(result["mailed_to"], "reports@example.com");
    assert_eq!(result["mail"]["status"], "sent");

    let pdf = app.stored(pdf_path);
    assert!(pdf.starts_with(b"%PDF-"));
    if let Ok(out) = std::env::var("SALES_REPORT_TEST_PDF") {
        std::fs::write(out, &pdf).unwrap();
    }
    let text = pdf_text(&pdf);
    assert!(text.contains("매출 리포트 / Sales report"), "{text}");
    assert!(value_of(&text, "기간 / Period").starts_with("2026-11-02 ~ 2026-11-03"));
    assert_eq!(value_of(&text, "주문 수 / Orders"), "3");
    assert_eq!(value_of(&text, "매출 / Revenue"), "₩195,000");
    assert_eq!(value_of(&text, "평균 객단가 / Average basket"), "₩65,000");
    assert_eq!(value_of(&text, "차단된 주문 / Blocked orders"), "1");
    assert_eq!(
        value_of(&text, "최고 매출 상품 / Top product"),
        "무선 키보드 (KB-101) ₩135,000"
    );
    for expected in [
        "무선 마우스",
        "₩60,000",
        "일별 FDS 결정",
        "BLOCK",
        "2026-11-03",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // Blocked and out-of-period orders sell nothing here.
    for absent in [
        "대형 TV",
        "₩2,000,000",
        "₩500,000",
        "₩700,000",
        "OUT-1",
        "OUT-2",
    ] {
        assert!(!text.contains(absent), "{absent:?} in:\n{text}");
    }

    let mails = app.smtp.wait_for(1, helpers::WAIT).await.unwrap();
    let mail = &mails[0];
    assert_eq!(mail.to, vec!["reports@example.com".to_owned()]);
    assert!(
        mail.subject.contains("2026-11-02 ~ 2026-11-03"),
        "{}",
        mail.subject
    );
    assert!(mail.text.as_deref().unwrap().contains("₩195,000"));
    let attachment = &mail.attachments[0];
    assert_eq!(attachment.content_type, "application/pdf");
    assert_eq!(
        attachment.filename.as_deref(),
        Some("sales-2026-11-02_2026-11-03.pdf")
    );
    assert_eq!(attachment.data, pdf);

    // A user_id that is no address, and no REPORT_MAIL_TO: stored, not mailed.
    let quiet = app
        .sales_report(
            json!({"start_date": "2026-11-02", "end_date": "2026-11-02", "user_id": "u-1"}),
        )
        .await;
    let result = app
        .wait_for_state(quiet.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    assert_eq!(result["mailed_to"], json!(null));
    assert_eq!(result["mail"]["status"], "not_sent");
    assert!(
        result["mail"]["reason"]
            .as_str()
            .unwrap()
            .contains("REPORT_MAIL_TO")
    );
    assert_eq!(result["totals"]["orders"], 2);
    assert!(
        app.stored(result["pdf_path"].as_str().unwrap())
            .starts_with(b"%PDF-")
    );
    assert_eq!(app.smtp.messages().unwrap().len(), 1, "one mail in all");
    app.stop().await;
}

#[tokio::test]
async fn a_backwards_or_overlong_period_fails_at_once_into_the_dead_letter_queue() {
    let mut app = spawn_report_worker(Options::default()).await;
    let backwards = app
        .sales_report(json!({"start_date": "2026-11-21", "end_date": "2026-11-01"}))
        .await;
    let record = app.wait_for_state(backwards.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0, "refused, not retried");
    let error = record.error.unwrap().to_string();
    assert!(
        error.contains("start_date 2026-11-21 is after end_date 2026-11-01"),
        "{error}"
    );
    assert!(
        record.progress.is_none(),
        "no step was started: {:?}",
        record.progress
    );

    let overlong = app
        .sales_report(json!({"start_date": "2025-01-01", "end_date": "2026-06-30"}))
        .await;
    let record = app.wait_for_state(overlong.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0);
    assert!(record.error.unwrap().to_string().contains("at most 366"));

    let dead = app.take("failed.reports", 2).await;
    let reasons: Vec<&str> = dead
        .iter()
        .map(|h| h[REASON_HEADER].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("is after end_date"), "{reasons:?}");
    assert!(reasons[1].contains("at most 366"), "{reasons:?}");
    assert!(app.smtp.messages().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn without_storage_a_report_is_refused_naming_the_variables() {
    let mut app = spawn_report_worker(Options {
        storage: false,
        ..Options::default()
    })
    .await;
    let msg = app
        .sales_report(json!({"start_date": "2026-11-01", "end_date": "2026-11-01"}))
        .await;
    let record = app.wait_for_state(msg.id(), TaskState::Failure).await;
    assert_eq!(record.retries, 0);
    let error = record.error.unwrap().to_string();
    assert!(
        error.contains("STORAGE_DIR") && error.contains("STORAGE_URL"),
        "{error}"
    );
    let dead = app.take("failed.reports", 1).await;
    assert!(
        dead[0][REASON_HEADER]
            .as_str()
            .unwrap()
            .contains("STORAGE_DIR")
    );
    app.stop().await;
}

#[tokio::test]
async fn the_daily_report_covers_yesterday_in_seoul_and_goes_to_report_mail_to() {
    let mut app = spawn_report_worker(Options {
        report_mail_to: Some("ops@example.com"),
        ..Options::default()
    })
    .await;
    // Yesterday as the task will see it; the test may straddle midnight in Seoul, so the day
    // is taken before and after, and the report must cover one of them.
    let before = report_worker::tasks::sales_report::period::yesterday(Utc::now()).unwrap();
    // Noon of that day in Seoul is 03:00 UTC.
    app.order(
        &format!("{before}T03:00:00Z"),
        "accepted",
        vec![line("KB-101", "무선 키보드", 1, 45_000)],
    )
    .await;
    let msg = app
        .send(tasks::GENERATE_DAILY_SALES_REPORT, json!({}))
        .await;
    let result = app
        .wait_for_state(msg.id(), TaskState::Success)
        .await
        .result
        .unwrap();
    let after = report_worker::tasks::sales_report::period::yesterday(Utc::now()).unwrap();
    let day = result["period"]["start_date"].as_str().unwrap().to_owned();
    assert_eq!(result["period"]["end_date"], day.as_str());
    assert!(
        day == before.to_string() || day == after.to_string(),
        "{day}: neither {before} nor {after}"
    );
    if day == before.to_string() {
        assert_eq!(result["totals"]["revenue"], json!({"KRW": 45_000}));
    }
    assert_eq!(result["mailed_to"], "ops@example.com");
    let mails = app.smtp.wait_for(1, helpers::WAIT).await.unwrap();
    assert_eq!(mails[0].to, vec!["ops@example.com".to_owned()]);
    assert_eq!(mails[0].attachments[0].content_type, "application/pdf");
    app.stop().await;
}
