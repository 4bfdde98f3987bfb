//! Customer mail: the messages rendered (plain text + HTML); sending is shopfds-mail's.

pub use shopfds_mail::{Attachment, Mail, Mailer, escape};
use shopfds_protocol::money::format_amount;
use shopfds_store::OrderRecord;

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
        attachments: Vec::new(),
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

/// `[ShopFDS] 청구서 (Order …)`: the invoice mail's text; the PDF is attached by the task.
pub fn invoice(order: &OrderRecord) -> Mail {
    let subject = format!("[ShopFDS] 청구서 (Order {})", order.id);
    let total = format_amount(order.total, &order.currency);
    let text = format!(
        "{name}님, 주문하신 상품의 청구서를 첨부해 드립니다.\nYour invoice is attached.\n\n\
         주문번호 / Order: {id}\n합계 / Total: {total}\n",
        name = order.customer_name,
        id = order.id,
    );
    let html = format!(
        "<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\"><title>{subject}</title></head><body>\
         <h1>청구서</h1><p>{name}님, 주문하신 상품의 청구서를 첨부해 드립니다.</p>\
         <p>주문번호 / Order: <strong>{id}</strong><br>합계 / Total: <strong>{total}</strong></p>\
         <p>첨부 파일 / Attached: invoice-{id}.pdf</p></body></html>",
        subject = escape(&subject),
        name = escape(&order.customer_name),
        id = order.id,
        total = escape(&total),
    );
    Mail {
        subject,
        text,
        html,
        attachments: Vec::new(),
    }
}
