//! Mail: rendering customer messages (plain text + HTML) and sending them over SMTP with lettre.

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use shopfds_broker::TaskError;
use shopfds_protocol::money::format_amount;
use shopfds_store::OrderRecord;

/// A rendered message.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(smtp_url: &str, from: Mailbox) -> anyhow::Result<Mailer> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| anyhow::anyhow!("SMTP_URL: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .build();
        Ok(Mailer { transport, from })
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
    pub async fn send(
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
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(Some(name.to_owned()), address))
            .subject(mail.subject.clone())
            .message_id(Some(message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
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

/// `[ShopFDS] 주문 확인 (Order …)`, as the seed's task writes it, with the items and total.
pub fn confirmation(order: &OrderRecord) -> Mail {
    let subject = format!("[ShopFDS] 주문 확인 (Order {})", order.id);
    let total = format_amount(order.total, &order.currency);
    let mut text = format!(
        "{name}님, 주문해 주셔서 감사합니다.\nThank you for your order.\n\n주문번호 / Order: {id}\n\n",
        name = order.customer_name,
        id = order.id
    );
    let mut rows = String::new();
    for item in &order.items {
        let line = format_amount(item.unit_price * i64::from(item.quantity), &order.currency);
        text.push_str(&format!(
            "- {} ({}) x {}  {}\n",
            item.name, item.sku, item.quantity, line
        ));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td style=\"text-align:right\">{}</td><td style=\"text-align:right\">{}</td></tr>",
            escape(&item.name),
            escape(&item.sku),
            item.quantity,
            escape(&line)
        ));
    }
    text.push_str(&format!("\n합계 / Total: {total}\n"));
    let address = address_line(&order.shipping_address);
    if !address.is_empty() {
        text.push_str(&format!("배송지 / Ship to: {address}\n"));
    }
    let html = format!(
        "<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\"><title>{subject}</title></head><body>\
         <h1>주문 확인</h1><p>{name}님, 주문해 주셔서 감사합니다.</p>\
         <p>주문번호 / Order: <strong>{id}</strong></p>\
         <table><thead><tr><th>상품</th><th>SKU</th><th>수량</th><th>금액</th></tr></thead><tbody>{rows}</tbody>\
         <tfoot><tr><td colspan=\"3\">합계 / Total</td><td style=\"text-align:right\"><strong>{total}</strong></td></tr></tfoot></table>\
         <p>배송지 / Ship to: {address}</p></body></html>",
        subject = escape(&subject),
        name = escape(&order.customer_name),
        id = order.id,
        rows = rows,
        total = escape(&total),
        address = escape(&address),
    );
    Mail {
        subject,
        text,
        html,
    }
}

fn address_line(address: &serde_json::Value) -> String {
    ["line1", "line2", "city", "postal_code", "country"]
        .iter()
        .filter_map(|k| address.get(*k).and_then(serde_json::Value::as_str))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

fn escape(s: &str) -> String {
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
}
