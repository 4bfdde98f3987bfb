//! The string types of the order body. Every string field of `POST /v1/orders` is one of these,
//! so a value that breaks a rule is refused while the JSON is read, with the path of its field
//! (`shipping_address.line2`), and cannot exist past the edge.
//!
//! The rules, for every field:
//! - leading and trailing whitespace is trimmed (a trailing newline or tab included);
//! - what remains may hold no control character (Unicode `Cc`: NUL and the other C0 controls,
//!   DEL, the C1 controls). Every field is a single line, so newline and tab are refused inside
//!   the text too; a second address line is `line2`, not a newline in `line1`;
//! - a maximum length in characters (each type below names it), checked before anything else
//!   so an oversized value is never echoed back or parsed further;
//! - required fields may not be blank; an optional field that is absent, `null` or blank is
//!   absent (see [`blank_is_none`]).
//!
//! [`Line`] is free text; [`Token`] an opaque identifier of visible ASCII (a card fingerprint, a
//! payment token); [`Email`], [`Currency`], [`Country`] and [`ClientIp`] have formats of their own.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};
use shopfds_protocol::money;

/// Free single-line text of 1 to `MAX` characters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Line<const MAX: usize>(String);

/// An opaque identifier of 1 to `MAX` visible ASCII characters (`!` to `~`, no space).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Token<const MAX: usize>(String);

/// An email address (as SMTP will accept it), at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// A currency code the API accepts (`money::supported_currencies`), upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

/// An ISO 3166-1 alpha-2 country code, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country(String);

/// An IPv4 or IPv6 address in its text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientIp(pub IpAddr);

const MAX_EMAIL: usize = 254;
/// The longest text form of an IPv6 address (with an embedded IPv4 address).
const MAX_IP: usize = 45;

/// Trims `raw` and applies the rules every field shares: not blank, at most `max` characters,
/// no control character.
fn single_line(raw: &str, max: usize) -> Result<&str, String> {
    let v = raw.trim();
    if v.is_empty() {
        return Err("must not be empty".to_owned());
    }
    // `chars().nth` stops after max + 1 characters, however long the value is.
    if v.chars().nth(max).is_some() {
        return Err(format!("at most {max} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters (newline and tab included)".to_owned());
    }
    Ok(v)
}

impl<const MAX: usize> Line<MAX> {
    pub fn parse(raw: &str) -> Result<Self, String> {
        single_line(raw, MAX).map(|v| Line(v.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Token<MAX> {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let v = single_line(raw, MAX)?;
        if !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters without spaces".to_owned());
        }
        Ok(Token(v.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let v = single_line(raw, MAX_EMAIL)?;
        v.parse::<lettre::Address>()
            .map_err(|_| format!("{v:?} is not an email address"))?;
        Ok(Email(v.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let known = || money::supported_currencies().collect::<Vec<_>>().join(", ");
        let v = single_line(raw, 3)
            .map_err(|_| format!("must be one of {}", known()))?
            .to_ascii_uppercase();
        if money::minor_unit_digits(&v).is_none() {
            return Err(format!("{v:?} is not accepted; use one of {}", known()));
        }
        Ok(Currency(v))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Country {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let v = raw.trim().to_ascii_uppercase();
        if v.len() != 2 || !v.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("must be an ISO 3166-1 alpha-2 country code such as \"KR\"".to_owned());
        }
        Ok(Country(v))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ClientIp {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let v = single_line(raw, MAX_IP).map_err(|_| "is not an IP address".to_owned())?;
        v.parse::<IpAddr>()
            .map(ClientIp)
            .map_err(|_| format!("{v:?} is not an IP address"))
    }
}

/// Reads an optional field: absent, `null` and blank (`""`, `"  "`) are all `None`, anything
/// else must parse as `T`.
pub fn blank_is_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String, Error = String>,
{
    match Option::<String>::deserialize(deserializer)? {
        Some(raw) if !raw.trim().is_empty() => {
            T::try_from(raw).map(Some).map_err(serde::de::Error::custom)
        }
        _ => Ok(None),
    }
}

// serde reads each type through `TryFrom<String>` (`#[serde(try_from = "String")]`).
impl<const MAX: usize> TryFrom<String> for Line<MAX> {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl<const MAX: usize> TryFrom<String> for Token<MAX> {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl TryFrom<String> for Country {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl TryFrom<String> for ClientIp {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl<const MAX: usize> From<Line<MAX>> for String {
    fn from(v: Line<MAX>) -> String {
        v.0
    }
}

impl<const MAX: usize> From<Token<MAX>> for String {
    fn from(v: Token<MAX>) -> String {
        v.0
    }
}

impl From<Email> for String {
    fn from(v: Email) -> String {
        v.0
    }
}

impl From<Currency> for String {
    fn from(v: Currency) -> String {
        v.0
    }
}

impl From<Country> for String {
    fn from(v: Country) -> String {
        v.0
    }
}

impl From<ClientIp> for String {
    fn from(v: ClientIp) -> String {
        v.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_trimmed_bounded_and_free_of_controls() {
        assert_eq!(Line::<5>::parse("  abc \n").unwrap().as_str(), "abc");
        assert_eq!(Line::<2>::parse("가나").unwrap().as_str(), "가나");
        assert!(Line::<2>::parse("가나다").is_err());
        for bad in [
            "",
            "   ",
            "a\u{0}b",
            "a\nb",
            "a\tb",
            "a\u{7f}",
            "a\u{85}b",
            "\u{1b}[31m",
        ] {
            assert!(Line::<50>::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_visible_ascii() {
        assert!(Token::<64>::parse("fp_9f8e7d").is_ok());
        for bad in ["fp 9f", "fp_é", "fp\u{0}", &"x".repeat(65)] {
            assert!(Token::<64>::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_oversized_value_is_not_echoed() {
        let huge = "Z".repeat(100_000);
        for message in [
            Currency::parse(&huge).unwrap_err(),
            Email::parse(&huge).unwrap_err(),
            ClientIp::parse(&huge).unwrap_err(),
        ] {
            assert!(message.len() < 200, "{message}");
        }
    }
}
