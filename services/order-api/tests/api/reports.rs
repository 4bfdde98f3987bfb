//! Sales reports through the HTTP API, with report-worker running: the progress is seen at two
//! steps without timing luck (the test holds a lock on `orders`, so step 1's query waits after
//! its progress was written; then the SMTP server holds the mail, so step 5 waits), the PDF is
//! 404 until the report is completed and served after; requests are checked (422 naming the
//! field), scoped (`reports`), and unknown or foreign task ids are 404.

use std::time::{Duration, Instant};

use chrono::{Duration as Days, Utc};
use reqwest::Response;
use serde_json::{Value, json};
use shopfds_protocol::TaskState;
use shopfds_store::TaskStateUpdate;
use shopfds_testkit::keys::TestKey;

use crate::helpers::{Options, TestApp, sample_order, spawn_app, spawn_app_with};

const WAIT: Duration = Duration::from_secs(60);

async fn post_report(app: &TestApp, key: &TestKey, body: &Value) -> Response {
    reqwest::Client::new()
        .post(format!("{}/v1/reports/sales", app.address))
        .header("authorization", key.bearer())
        .json(body)
        .send()
        .await
        .expect("POST /v1/reports/sales")
}

async fn get_with(app: &TestApp, key: &TestKey, path: &str) -> Response {
    app.get_as(Some(key), path).await
}

/// Polls `GET /v1/reports/sales/{id}` until `done` holds for the answer.
async fn wait_for_report(
    app: &TestApp,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let resp = get_with(app, &app.keys.reports, &format!("/v1/reports/sales/{id}")).await;
        assert_eq!(resp.status(), 200);
        last = resp.json().await.expect("JSON");
        if done(&last) {
            return last;
        }
        assert_ne!(last["status"], "failed", "{last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("report {id} never {what} within {WAIT:?}; last seen: {last}");
}

#[tokio::test]
async fn progress_is_followed_step_by_step_and_the_pdf_is_served_once_completed() {
    let app = spawn_app_with(Options {
        report_worker: true,
        ..Options::default()
    })
    .await;
    // One order of ₩90,000, made now: in the period yesterday-today in Seoul (UTC+9, no DST).
    assert_eq!(app.post_order(&sample_order()).await.status(), 201);
    let today = (Utc::now() + Days::hours(9)).date_naive();
    let yesterday = today - Days::days(1);

    // Step 1's query will wait for this lock, after its progress was written.
    let mut lock = app.store.pool().begin().await.unwrap();
    shopfds_store::sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let resp = post_report(
        &app,
        &app.keys.reports,
        // The SMTP sink holds a mail to a `hold…` address until released: step 5 waits.
        &json!({"start_date": yesterday, "end_date": today, "user_id": "hold-reports@example.com"}),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["status"], "pending");
    let id = created["task_id"].as_str().unwrap().to_owned();

    let fetching = wait_for_report(&app, &id, "reached step 1", |r| r["current"] == 1).await;
    assert_eq!(
        fetching,
        json!({"status": "in_progress", "current": 1, "total": 5, "progress": 20, "message": "Fetching data..."})
    );
    let pdf = get_with(&app, &app.keys.reports, &format!("/v1/reports/{id}/pdf")).await;
    assert_eq!(pdf.status(), 404, "no PDF before the report is completed");
    lock.commit().await.unwrap();

    let sending = wait_for_report(&app, &id, "reached step 5", |r| r["current"] == 5).await;
    assert_eq!(
        sending,
        json!({"status": "in_progress", "current": 5, "total": 5, "progress": 100, "message": "Sending email..."})
    );
    let pdf = get_with(&app, &app.keys.reports, &format!("/v1/reports/{id}/pdf")).await;
    assert_eq!(
        pdf.status(),
        404,
        "stored, but the report is not completed yet"
    );
    app.smtp.release_held().unwrap();

    let completed = wait_for_report(&app, &id, "completed", |r| r["status"] == "completed").await;
    let result = &completed["result"];
    assert_eq!(result["status"], "completed");
    assert_eq!(result["totals"]["orders"], 1);
    assert_eq!(result["totals"]["revenue"], json!({"KRW": 90000}));
    assert_eq!(result["totals"]["top_product"]["sku"], "KB-101");
    assert_eq!(result["mailed_to"], "hold-reports@example.com");
    let pdf_path = result["pdf_path"].as_str().unwrap();
    assert_eq!(
        pdf_path,
        format!("reports/sales-{yesterday}_{today}-{id}.pdf")
    );

    let pdf = get_with(&app, &app.keys.reports, &format!("/v1/reports/{id}/pdf")).await;
    assert_eq!(pdf.status(), 200);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    let disposition = pdf.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        disposition,
        format!("attachment; filename=\"sales-{yesterday}_{today}-{id}.pdf\"")
    );
    let bytes = pdf.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let stored = std::fs::read(app.storage.as_ref().unwrap().path().join(pdf_path)).unwrap();
    assert_eq!(
        stored,
        bytes.to_vec(),
        "the stored report, as report-worker wrote it"
    );

    // The task as GET /v1/tasks shows it, and the mail with the same PDF.
    let task = app
        .wait_for_task_state(&id, "SUCCESS", Duration::from_secs(10))
        .await;
    assert_eq!(task["name"], "generate_sales_report");
    assert_eq!(task["queue"], "reports");
    let mails = app.wait_for_mail(2).await;
    let report_mail = mails
        .iter()
        .find(|m| m.to == ["hold-reports@example.com"])
        .expect("the report's mail");
    assert_eq!(report_mail.attachments[0].content_type, "application/pdf");
    assert_eq!(report_mail.attachments[0].data, bytes.to_vec());
    app.stop().await;
}

#[tokio::test]
async fn requests_are_checked_scoped_and_foreign_ids_are_404() {
    // No report-worker and no storage: a requested report stays pending.
    let app = spawn_app().await;
    let reports = &app.keys.reports;
    for (body, field) in [
        (
            json!({"start_date": "2026-11-21", "end_date": "2026-11-01"}),
            "start_date",
        ),
        (
            json!({"start_date": "2026-11-01", "end_date": "21/11/2026"}),
            "end_date",
        ),
        (json!({"end_date": "2026-11-01"}), "start_date"),
        (
            json!({"start_date": "2025-01-01", "end_date": "2026-11-01"}),
            "end_date",
        ),
        (
            json!({"start_date": "2026-11-01", "end_date": "2026-11-02", "format": "xlsx"}),
            "format",
        ),
    ] {
        let resp = post_report(&app, reports, &body).await;
        assert_eq!(resp.status(), 422, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let start_after_end = post_report(
        &app,
        reports,
        &json!({"start_date": "2026-11-21", "end_date": "2026-11-01"}),
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    assert!(
        start_after_end["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after end_date"),
        "{start_after_end}"
    );

    // A key is needed, with scope `reports` (or admin); a storefront's key is refused.
    let good = json!({"start_date": "2026-11-01", "end_date": "2026-11-07"});
    let anonymous = reqwest::Client::new()
        .post(format!("{}/v1/reports/sales", app.address))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let refused = post_report(&app, &app.keys.shop, &good).await;
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["scope"], "reports");
    let resp = post_report(&app, reports, &good).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status: Value = get_with(&app, reports, &format!("/v1/reports/sales/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status, json!({"status": "pending", "progress": 0}));
    assert_eq!(
        get_with(&app, reports, &format!("/v1/reports/{id}/pdf"))
            .await
            .status(),
        404
    );
    assert_eq!(
        get_with(&app, &app.keys.shop, &format!("/v1/reports/sales/{id}"))
            .await
            .status(),
        403
    );

    // Unknown ids, and an order's task, are no sales reports.
    let order: Value = app.post_order_json(&sample_order()).await;
    let confirmation = order["tasks"]["send_order_confirmation_email"]
        .as_str()
        .unwrap();
    for path in [
        "/v1/reports/sales/no-such-task".to_owned(),
        "/v1/reports/no-such-task/pdf".to_owned(),
        format!("/v1/reports/sales/{confirmation}"),
        format!("/v1/reports/{confirmation}/pdf"),
    ] {
        let resp = get_with(&app, reports, &path).await;
        assert_eq!(resp.status(), 404, "{path}");
    }

    // A completed report while order-api has no storage: 503.
    let done = "report-done-elsewhere";
    app.store
        .results()
        .record(&TaskStateUpdate {
            task_id: done.to_owned(),
            name: "generate_sales_report".to_owned(),
            queue: "reports".to_owned(),
            state: TaskState::Success,
            retries: 0,
            progress: None,
            result: Some(json!({"status": "completed", "pdf_path": "reports/sales-x.pdf"})),
            error: None,
            expires_at: None,
        })
        .await
        .unwrap();
    let resp = get_with(&app, reports, &format!("/v1/reports/{done}/pdf")).await;
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("STORAGE_DIR"),
        "{err}"
    );
    app.stop().await;
}
