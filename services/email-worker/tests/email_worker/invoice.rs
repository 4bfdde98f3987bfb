//! `send_invoice_email` as the order's chain delivers it (the PDF task's result first): one mail
//! with the PDF from storage attached, none on a second delivery; without the PDF in storage yet
//! it retries, and it sends as soon as the PDF is there.

use serde_json::{Value, json};
use shopfds_broker::Outgoing;
use shopfds_protocol::tasks::SEND_INVOICE_EMAIL;
use shopfds_protocol::{TaskMessage, TaskState};

use crate::helpers::{CUSTOMER, TestApp, WAIT, spawn_email_worker};

/// A message the way the chain sends it: `generate_invoice_pdf`'s result, then `order_id`.
fn chained(app: &TestApp) -> TaskMessage {
    let mut msg = TaskMessage::new(SEND_INVOICE_EMAIL, app.order_kwargs());
    msg.args = vec![json!({
        "order_id": app.order_id,
        "invoice": format!("invoices/{}.pdf", app.order_id),
        "size": 9,
    })];
    msg
}

fn put_pdf(app: &TestApp) -> Vec<u8> {
    let pdf = b"%PDF-1.7 an invoice".to_vec();
    let dir = app.storage.path().join("invoices");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{}.pdf", app.order_id)), &pdf).unwrap();
    pdf
}

#[tokio::test]
async fn the_invoice_is_mailed_once_with_its_pdf_attached() {
    let mut app = spawn_email_worker().await;
    let pdf = put_pdf(&app);
    let first = chained(&app);
    app.publish(&Outgoing::task(&first, "email")).await;
    let record = app.wait_for_state(first.id(), TaskState::Success).await;
    assert_eq!(record.result.as_ref().unwrap()["status"], "sent");

    let mails = app.smtp.wait_for(1, WAIT).await.unwrap();
    let mail = &mails[0];
    assert_eq!(mail.to, vec![CUSTOMER.to_owned()]);
    assert!(mail.subject.contains("청구서"), "{}", mail.subject);
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("invoice.{}@shopfds.com", app.order_id).as_str())
    );
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(mail.attachments[0].content_type, "application/pdf");
    assert_eq!(
        mail.attachments[0].filename.as_deref(),
        Some(format!("invoice-{}.pdf", app.order_id).as_str())
    );
    assert_eq!(mail.attachments[0].data, pdf);

    // Delivered again (a replay, a duplicate publish): nothing more is sent.
    let again = chained(&app);
    app.publish(&Outgoing::task(&again, "email")).await;
    let record = app.wait_for_state(again.id(), TaskState::Success).await;
    assert_eq!(record.result.as_ref().unwrap()["status"], "already_sent");
    assert_eq!(app.smtp.messages().unwrap().len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn without_its_pdf_yet_the_mail_waits_and_goes_once_the_pdf_is_there() {
    let mut app = spawn_email_worker().await;
    let msg = chained(&app);
    app.publish(&Outgoing::task(&msg, "email")).await;
    let record = app.wait_for_state(msg.id(), TaskState::Retry).await;
    let error: &Value = record.error.as_ref().unwrap();
    assert!(
        error.to_string().contains("not in"),
        "the reason names the missing PDF: {error}"
    );
    assert!(app.smtp.messages().unwrap().is_empty());

    put_pdf(&app);
    app.wait_for_state(msg.id(), TaskState::Success).await;
    let mails = app.smtp.wait_for(1, WAIT).await.unwrap();
    assert_eq!(mails[0].attachments.len(), 1);
    app.stop().await.unwrap();
}
