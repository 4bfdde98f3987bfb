//! SmtpSink: a message sent with lettre (Korean subject, text + HTML, an attachment) is received
//! by the real aiosmtpd and parsed back; the failure addresses produce real 4xx/5xx replies.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use shopfds_testkit::smtp::SmtpSink;

fn transport(sink: &SmtpSink) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port)
        .build()
}

fn mailbox(text: &str) -> Mailbox {
    text.parse().unwrap()
}

#[tokio::test]
async fn receives_and_parses_a_korean_multipart_message() {
    let sink = SmtpSink::start().await.unwrap();
    assert_eq!(sink.url(), format!("smtp://127.0.0.1:{}", sink.port));
    assert!(sink.messages().unwrap().is_empty());

    let subject = "[OK] 주문 확인 (Order 0f3c) — 김민수님, 주문해 주셔서 감사합니다";
    let text = "김민수님, 무선 키보드 2개 주문이 접수되었습니다. 합계: ₩90,000";
    let html = "<p>김민수님, <b>무선 키보드</b> 2개 주문이 접수되었습니다.</p>";
    let pdf = b"%PDF-1.4\n% fake invoice\n".to_vec();
    let message = Message::builder()
        .from(mailbox("ShopFDS <noreply@shopfds.example>"))
        .to(mailbox("김민수 <minsu.kim@example.com>"))
        .subject(subject)
        .header(lettre::message::header::MessageId::from(
            "<order-0f3c@shopfds.example>".to_owned(),
        ))
        .multipart(
            MultiPart::mixed()
                .multipart(MultiPart::alternative_plain_html(
                    text.to_owned(),
                    html.to_owned(),
                ))
                .singlepart(
                    Attachment::new("invoice-0f3c.pdf".to_owned())
                        .body(pdf.clone(), ContentType::parse("application/pdf").unwrap()),
                ),
        )
        .unwrap();
    transport(&sink).send(message).await.unwrap();

    let mails = sink.wait_for(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "noreply@shopfds.example");
    assert_eq!(mail.to, vec!["minsu.kim@example.com".to_owned()]);
    assert_eq!(mail.subject, subject);
    assert_eq!(mail.text.as_deref().map(str::trim_end), Some(text));
    assert_eq!(mail.html.as_deref().map(str::trim_end), Some(html));
    assert_eq!(mail.header("to"), Some("김민수 <minsu.kim@example.com>"));
    assert_eq!(
        mail.header("Message-ID"),
        Some("order-0f3c@shopfds.example")
    );
    // On the wire the header block is ASCII (RFC 2047 encoded words), decoded back above.
    let raw = String::from_utf8_lossy(&mail.raw);
    let header_block = raw.split("\r\n\r\n").next().unwrap();
    assert!(header_block.is_ascii(), "{header_block}");
    assert!(header_block.contains("=?utf-8?b?"), "{header_block}");
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(
        mail.attachments[0].filename.as_deref(),
        Some("invoice-0f3c.pdf")
    );
    assert_eq!(mail.attachments[0].content_type, "application/pdf");
    assert_eq!(mail.attachments[0].data, pdf);
}

#[tokio::test]
async fn plain_text_message_has_no_html() {
    let sink = SmtpSink::start().await.unwrap();
    let message = Message::builder()
        .from(mailbox("noreply@shopfds.example"))
        .to(mailbox("a@example.com"))
        .bcc(mailbox("audit@example.com"))
        .subject("plain")
        .body("just text".to_owned())
        .unwrap();
    transport(&sink).send(message).await.unwrap();
    let mail = sink
        .wait_for(1, Duration::from_secs(10))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(mail.text.as_deref().map(str::trim_end), Some("just text"));
    assert_eq!(mail.html, None);
    assert_eq!(
        mail.to,
        vec!["a@example.com".to_owned(), "audit@example.com".to_owned()]
    );
}

#[tokio::test]
async fn failure_addresses_get_real_smtp_errors() {
    let sink = SmtpSink::start().await.unwrap();
    let send = |to: &str| {
        Message::builder()
            .from(mailbox("noreply@shopfds.example"))
            .to(mailbox(to))
            .subject("x")
            .body("x".to_owned())
            .unwrap()
    };
    let transient = transport(&sink)
        .send(send("tempfail@example.com"))
        .await
        .unwrap_err();
    assert!(transient.is_transient(), "{transient:?}");
    let permanent = transport(&sink)
        .send(send("reject@example.com"))
        .await
        .unwrap_err();
    assert!(permanent.is_permanent(), "{permanent:?}");
    assert!(sink.messages().unwrap().is_empty());
}
