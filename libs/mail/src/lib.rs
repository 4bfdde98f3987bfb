//! Mail over SMTP with lettre, for every worker that mails (email-worker's customer mail,
//! report-worker's sales reports).
//!
//! [`MailSettings`] reads `SMTP_URL` and `MAIL_FROM`; [`Mailer::send`] sends a [`Mail`] (plain
//! text and HTML alternatives, and any attachments) to one recipient, with a Message-ID derived
//! from a business key, and sorts failures as the runtime needs them: SMTP 5xx and a bad
//! address are permanent, 4xx, timeouts and connection failures transient.

use lettre::message::header::ContentType;
use lettre::message::{Attachment as LettreAttachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use shopfds_broker::TaskError;
use shopfds_config::{ConfigError, Env, SecretUrl};
use tracing::Instrument as _;

/// `SMTP_URL` and `MAIL_FROM`.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `SMTP_URL`: `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:465`. Default `smtp://127.0.0.1:1025`. Logged without its password.
    pub smtp_url: SecretUrl,
    /// `MAIL_FROM`, default `ShopFDS <noreply@shopfds.com>`.
    pub from: Mailbox,
}

impl MailSettings {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let from = env.string("MAIL_FROM", "ShopFDS <noreply@shopfds.com>");
        Ok(MailSettings {
            smtp_url: env.url("SMTP_URL", "smtp://127.0.0.1:1025", &["smtp", "smtps"])?,
            from: from
                .parse()
                .map_err(|_| ConfigError::new("MAIL_FROM", format!("{from:?} is not a mailbox")))?,
        })
    }
}

/// A file sent with a mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub filename: String,
    /// `application/pdf`.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attachments: Vec<Attachment>,
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Mailer> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.smtp_url.expose())
            .map_err(|e| anyhow::anyhow!("SMTP_URL: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        Ok(Mailer {
            transport,
            from: settings.from.clone(),
        })
    }

    /// Whether the SMTP server answers (a connection, `EHLO`, `QUIT`), for `health_check`.
    pub async fn check(&self) -> Result<(), String> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the SMTP server did not accept the connection".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends `mail` to one recipient. The Message-ID is derived from `key`, so a copy sent again
    /// after a crash is recognisable as the same message. SMTP 5xx and a bad address are
    /// permanent; 4xx, timeouts and connection failures are transient.
    ///
    /// The whole send is a client span `smtp send` (a child of the task's span), marked as an
    /// error when the server refused the message or could not be reached.
    pub async fn send(
        &self,
        to: &str,
        name: &str,
        mail: &Mail,
        key: &str,
    ) -> Result<String, TaskError> {
        let span = tracing::info_span!(
            "smtp",
            otel.name = "smtp send",
            otel.kind = "client",
            mail.message_id = tracing::field::Empty,
            mail.attachments = mail.attachments.len(),
            otel.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let sent = self
            .send_message(to, name, mail, key)
            .instrument(span.clone())
            .await;
        match &sent {
            Ok(message_id) => {
                span.record("mail.message_id", message_id.as_str());
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("error", e.to_string());
            }
        }
        sent
    }

    async fn send_message(
        &self,
        to: &str,
        name: &str,
        mail: &Mail,
        key: &str,
    ) -> Result<String, TaskError> {
        let address = to.parse().map_err(|e| {
            TaskError::permanent(format!("recipient {to:?} is not an email address: {e}"))
        })?;
        let domain = self.from.email.domain().to_owned();
        let message_id = format!("<{key}@{domain}>");
        let body = MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone());
        let builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(Some(name.to_owned()), address))
            .subject(mail.subject.clone())
            .message_id(Some(message_id.clone()));
        let message = if mail.attachments.is_empty() {
            builder.multipart(body)
        } else {
            let mut mixed = MultiPart::mixed().multipart(body);
            for a in &mail.attachments {
                mixed = mixed.singlepart(attachment(a)?);
            }
            builder.multipart(mixed)
        }
        .map_err(|e| TaskError::permanent(format!("cannot build the message: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(message_id),
            Err(e) if e.is_permanent() => Err(TaskError::permanent(format!(
                "SMTP rejected the message: {e}"
            ))),
            Err(e) => Err(TaskError::transient(format!("SMTP: {e}"))),
        }
    }
}

fn attachment(a: &Attachment) -> Result<SinglePart, TaskError> {
    let content_type = ContentType::parse(&a.content_type).map_err(|e| {
        TaskError::permanent(format!(
            "attachment {}: content type {:?}: {e}",
            a.filename, a.content_type
        ))
    })?;
    Ok(LettreAttachment::new(a.filename.clone()).body(a.bytes.clone(), content_type))
}

/// Whether `s` is one email address (`local@domain`, no display name), as [`Mailer::send`]
/// accepts a recipient.
pub fn is_address(s: &str) -> bool {
    s.parse::<lettre::Address>().is_ok()
}

/// `s` with HTML's five special characters escaped, for customer input in HTML mail.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_from_customer_input() {
        assert_eq!(
            escape("<b>\"Kim\" & 'Lee'</b>"),
            "&lt;b&gt;&quot;Kim&quot; &amp; &#39;Lee&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn tells_an_address_from_anything_else() {
        assert!(is_address("ops@example.com"));
        for not in ["u-1", "", "a@", "@b", "Kim <kim@example.com>", "a b@c.d"] {
            assert!(!is_address(not), "{not:?}");
        }
    }

    #[test]
    fn names_a_bad_sender_or_server() {
        let bad_from = MailSettings::read(&Env::from_pairs([("MAIL_FROM", "not a mailbox")]));
        assert_eq!(
            bad_from.err().map(|e| e.variable),
            Some("MAIL_FROM".to_owned())
        );
        let bad_url = MailSettings::read(&Env::from_pairs([("SMTP_URL", "http://x")]));
        assert_eq!(
            bad_url.err().map(|e| e.variable),
            Some("SMTP_URL".to_owned())
        );
    }
}
