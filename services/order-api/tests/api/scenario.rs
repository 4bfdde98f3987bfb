//! The whole order scenario through order-api, on real workers and servers: fds-worker scores
//! it, the relay publishes its canvas, email-worker mails the confirmation, report-worker makes
//! the invoice PDF, email-worker mails it attached and books the shipment with the partner (a
//! real HTTP server of the test). What a customer and the shop see at the end is checked: two
//! mails, the invoice's Korean lines as `pdftotext` reads them, a tracking number, every task
//! SUCCESS, the invoice served by `GET /v1/orders/{id}/invoice`.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Options, TestApp, sample_order, spawn_app_with};

const WAIT: Duration = Duration::from_secs(60);

async fn whole_order_app() -> TestApp {
    spawn_app_with(Options {
        report_worker: true,
        partner: true,
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn an_order_ends_with_two_mails_an_invoice_and_a_tracking_number() {
    let app = whole_order_app().await;
    let mut body = sample_order();
    body["items"] = serde_json::json!([
        {"sku": "KB-101", "name": "무선 키보드", "quantity": 2, "unit_price": 45000},
        {"sku": "MS-202", "name": "무선 마우스", "quantity": 1, "unit_price": 25000}
    ]);
    let order = app.post_order_json(&body).await;
    assert_eq!(order["status"], "accepted", "{order}");
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let tasks = order["tasks"].as_object().unwrap().clone();
    let names: Vec<&str> = tasks.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "send_order_confirmation_email",
            "generate_invoice_pdf",
            "send_invoice_email",
            "register_shipment"
        ]
    );

    // Every task of the canvas succeeds, the invoice mail after its PDF.
    for (name, id) in &tasks {
        let task = app
            .wait_for_task_state(id.as_str().unwrap(), "SUCCESS", WAIT)
            .await;
        assert_eq!(task["name"], *name);
    }

    // Two mails to the customer: the confirmation, and the invoice with its PDF.
    let mails = app.wait_for_mail(2).await;
    assert_eq!(mails.len(), 2, "exactly two mails");
    let confirmation = mails
        .iter()
        .find(|m| m.subject.contains("주문 확인"))
        .expect("the confirmation");
    let invoice_mail = mails
        .iter()
        .find(|m| m.subject.contains("청구서"))
        .expect("the invoice mail");
    for mail in [confirmation, invoice_mail] {
        assert_eq!(mail.to, vec!["minsu.kim@example.com".to_owned()]);
        assert!(mail.subject.contains(&order_id), "{}", mail.subject);
    }
    assert!(confirmation.attachments.is_empty());
    assert_eq!(invoice_mail.attachments.len(), 1);
    let attached = &invoice_mail.attachments[0];
    assert_eq!(attached.content_type, "application/pdf");
    assert_eq!(
        attached.filename.as_deref(),
        Some(format!("invoice-{order_id}.pdf").as_str())
    );
    let text = shopfds_testkit::pdf::text(&attached.data).unwrap();
    for expected in [
        order_id.as_str(),
        "무선 키보드",
        "무선 마우스",
        "KB-101",
        "₩45,000",
        "₩90,000",
        "₩115,000",              // total
        "₩10,455",               // VAT: 115,000 / 11, rounded
        "₩104,545",              // supply value
        "세종대로 110",          // ship to
        "minsu.kim@example.com", // bill to
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} not in the invoice:\n{text}"
        );
    }

    // The order shows its tracking number (the partner booked it once) and the invoice link,
    // which serves the same PDF.
    let stored: Value = app.get_json(&format!("/v1/orders/{order_id}")).await;
    let tracking = stored["tracking_number"]
        .as_str()
        .expect("a tracking number");
    let partner = app.partner.as_ref().unwrap();
    let bookings = partner.bookings().await.unwrap();
    assert_eq!(bookings.len(), 1, "{bookings:?}");
    assert_eq!(bookings[0].key, format!("shipment-{order_id}"));
    assert_eq!(bookings[0].tracking_number, tracking);
    let link = stored["invoice_url"].as_str().expect("an invoice link");
    assert_eq!(link, format!("/v1/orders/{order_id}/invoice"));
    let resp = app.get(link).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        attached.data.as_slice()
    );
    app.stop().await;
}

#[tokio::test]
async fn the_invoice_is_404_before_it_is_made_and_needs_orders_read() {
    // No report-worker: the PDF task waits in its queue, so the order has no invoice yet.
    let app = spawn_app_with(Options::default()).await;
    let order = app.post_order_json(&sample_order()).await;
    let order_id = order["order_id"].as_str().unwrap();
    let path = format!("/v1/orders/{order_id}/invoice");
    let resp = app.get(&path).await;
    assert_eq!(resp.status(), 404);
    let error: Value = resp.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no invoice yet")),
        "{error}"
    );
    let stored: Value = app.get_json(&format!("/v1/orders/{order_id}")).await;
    assert_eq!(stored["invoice_url"], Value::Null);
    assert_eq!(
        app.get(&format!("/v1/orders/{}/invoice", uuid_nil()))
            .await
            .status(),
        404
    );
    // A key for reports only may not read an order's invoice.
    let resp = app.get_as(Some(&app.keys.reports), &path).await;
    assert_eq!(resp.status(), 403);
    app.stop().await;
}

fn uuid_nil() -> &'static str {
    "00000000-0000-0000-0000-000000000000"
}
