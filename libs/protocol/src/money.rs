//! Money in a currency's minor unit (ISO 4217): how many decimals each currency has, and how a
//! customer should read an amount. KRW has no minor unit: 45000 is ₩45,000; USD 1999 is $19.99.

/// Currencies we accept, with their number of decimals and symbol.
const CURRENCIES: &[(&str, u32, &str)] = &[
    ("KRW", 0, "₩"),
    ("JPY", 0, "¥"),
    ("USD", 2, "$"),
    ("EUR", 2, "€"),
    ("GBP", 2, "£"),
    ("CNY", 2, "CN¥"),
];

/// Decimals of an accepted currency; `None` for a code we do not accept.
pub fn minor_unit_digits(currency: &str) -> Option<u32> {
    CURRENCIES
        .iter()
        .find(|(code, _, _)| *code == currency)
        .map(|(_, digits, _)| *digits)
}

pub fn supported_currencies() -> impl Iterator<Item = &'static str> {
    CURRENCIES.iter().map(|(code, _, _)| *code)
}

/// `₩90,000`, `$19.99`, or `1,234.56 XXX` for a code without a known symbol.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let (digits, symbol) = CURRENCIES
        .iter()
        .find(|(code, _, _)| *code == currency)
        .map_or((2, None), |(_, d, s)| (*d, Some(*s)));
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let scale = 10u64.pow(digits);
    let whole = group_thousands(abs / scale);
    let number = if digits == 0 {
        whole
    } else {
        format!("{whole}.{:0width$}", abs % scale, width = digits as usize)
    };
    match symbol {
        Some(symbol) => format!("{sign}{symbol}{number}"),
        None => format!("{sign}{number} {currency}"),
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_minor_units_per_currency() {
        assert_eq!(format_amount(90000, "KRW"), "₩90,000");
        assert_eq!(format_amount(1999, "USD"), "$19.99");
        assert_eq!(format_amount(5, "EUR"), "€0.05");
        assert_eq!(format_amount(123456789, "XTS"), "1,234,567.89 XTS");
        assert_eq!(format_amount(-1000, "KRW"), "-₩1,000");
        assert_eq!(minor_unit_digits("KRW"), Some(0));
        assert_eq!(minor_unit_digits("ABC"), None);
    }
}
