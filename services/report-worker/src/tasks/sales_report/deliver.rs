//! Step 5, "Sending email...": the PDF mailed to the report's recipient, once per task id.
//!
//! The recipient: the task's `user_id` when it is an email address; otherwise `REPORT_MAIL_TO`
//! when set; otherwise nobody, and the result says so (the PDF is stored either way). A
//! recipient the SMTP server refuses (5xx) fails the task for good; 4xx and an unreachable
//! server are retried.
//!
//! Once per task id: the send and its record (`processed_tasks`, key
//! `sales-report-mail:<task id>`) are one effect, so a redelivered message (a worker lost
//! after the send) does not mail the report again.

use serde_json::{Value, json};
use shopfds_broker::{TaskContext, TaskError};
use shopfds_mail::{Attachment, Mail, Mailer, escape};
use shopfds_results::database_error as database;
use shopfds_store::Store;

use super::aggregate::Summary;

/// Who gets the report, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// `user_id`, an email address.
    User(String),
    /// `REPORT_MAIL_TO`.
    Configured(String),
    /// Nobody: the reason.
    Nobody(&'static str),
}

impl Recipient {
    pub fn decide(user_id: Option<&str>, report_mail_to: Option<&str>) -> Recipient {
        match (user_id, report_mail_to) {
            (Some(user), _) if shopfds_mail::is_address(user) => Recipient::User(user.to_owned()),
            (_, Some(to)) => Recipient::Configured(to.to_owned()),
            (Some(_), None) => Recipient::Nobody(
                "not mailed: user_id is not an email address and REPORT_MAIL_TO is not set",
            ),
            (None, None) => {
                Recipient::Nobody("not mailed: no user_id and REPORT_MAIL_TO is not set")
            }
        }
    }
}

/// What step 5 did, for the result: `mailed_to` and `mail`.
pub struct Delivery {
    pub mailed_to: Option<String>,
    pub mail: Value,
}

/// Mails `pdf` to `recipient` unless this task id already did.
pub async fn deliver(
    store: &Store,
    mailer: &Mailer,
    ctx: &TaskContext,
    recipient: &Recipient,
    summary: &Summary,
    pdf: &[u8],
) -> Result<Delivery, TaskError> {
    let to = match recipient {
        Recipient::User(to) | Recipient::Configured(to) => to,
        Recipient::Nobody(reason) => {
            return Ok(Delivery {
                mailed_to: None,
                mail: json!({"status": "not_sent", "reason": reason}),
            });
        }
    };
    let once = store
        .once()
        .begin(&format!("sales-report-mail:{}", ctx.id()))
        .await
        .map_err(database)?;
    if let Some(first) = once.already_done() {
        tracing::info!(task_id = %ctx.id(), "sales report already mailed; not mailing again");
        let mut mail = first.clone();
        if let Some(fields) = mail.as_object_mut() {
            fields.insert("status".to_owned(), json!("already_sent"));
        }
        return Ok(Delivery {
            mailed_to: Some(to.clone()),
            mail,
        });
    }
    let message = mail(summary, pdf);
    let name = to.split('@').next().unwrap_or_default();
    let key = format!("sales-report.{}", super::safe_id(ctx.id()));
    let mail = ctx
        .effect(async {
            let message_id = mailer.send(to, name, &message, &key).await?;
            let mail = json!({"status": "sent", "message_id": message_id});
            once.complete(ctx.id(), mail.clone())
                .await
                .map_err(database)?;
            Ok::<_, TaskError>(mail)
        })
        .await?;
    Ok(Delivery {
        mailed_to: Some(to.clone()),
        mail,
    })
}

/// The message: the totals in text and HTML, the PDF attached.
fn mail(summary: &Summary, pdf: &[u8]) -> Mail {
    let period = summary.period.label();
    let lines = [
        ("기간 / Period", period.clone()),
        ("주문 수 / Orders", summary.orders.to_string()),
        ("매출 / Revenue", summary.per_currency(|c| c.revenue)),
        (
            "평균 객단가 / Average basket",
            summary.per_currency(|c| c.average_basket),
        ),
        (
            "차단된 주문 / Blocked orders",
            summary.blocked_orders.to_string(),
        ),
    ];
    let text = lines
        .iter()
        .map(|(label, value)| format!("{label}: {value}"))
        .chain(["".to_owned(), "PDF 첨부 / PDF attached.".to_owned()])
        .collect::<Vec<_>>()
        .join("\n");
    let rows: String = lines
        .iter()
        .map(|(label, value)| {
            format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape(label),
                escape(value)
            )
        })
        .collect();
    let html = format!(
        "<html><body><h2>매출 리포트 / Sales report</h2><table>{rows}</table>\
         <p>PDF 첨부 / PDF attached.</p></body></html>"
    );
    let (start, end) = (summary.period.start, summary.period.end);
    Mail {
        subject: format!("매출 리포트 / Sales report {period}"),
        text,
        html,
        attachments: vec![Attachment {
            filename: format!("sales-{start}_{end}.pdf"),
            content_type: "application/pdf".to_owned(),
            bytes: pdf.to_vec(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_when_an_address_else_the_configured_one_else_nobody() {
        let ops = Some("ops@example.com");
        assert_eq!(
            Recipient::decide(Some("kim@example.com"), ops),
            Recipient::User("kim@example.com".to_owned())
        );
        assert_eq!(
            Recipient::decide(Some("u-1"), ops),
            Recipient::Configured("ops@example.com".to_owned())
        );
        assert_eq!(
            Recipient::decide(None, ops),
            Recipient::Configured("ops@example.com".to_owned())
        );
        assert!(matches!(
            Recipient::decide(Some("u-1"), None),
            Recipient::Nobody(reason) if reason.contains("REPORT_MAIL_TO")
        ));
        assert!(matches!(
            Recipient::decide(None, None),
            Recipient::Nobody(_)
        ));
    }
}
