//! Reading a request body into one of the domain's wire types: one JSON value and nothing after
//! it, every rejection a 422 naming the field as a path (`items[0].quantity`), `body` when the
//! JSON itself is broken.

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `body` as a `T`, or the 422 naming the field at fault.
pub fn from_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::validation("body", format!("not valid JSON: {inner}"))
        } else {
            // "missing field `x`" is reported on the parent, "unknown field `x`" on the
            // field itself: name the field either way.
            let text = inner.to_string();
            let field = match named_field(&text) {
                Some(named) if path == "." => named.to_owned(),
                Some(named) if path == named || path.ends_with(&format!(".{named}")) => path,
                Some(named) => format!("{path}.{named}"),
                None if path == "." => "body".to_owned(),
                None => path,
            };
            ApiError::validation(&field, strip_position(&text))
        }
    })?;
    de.end()
        .map_err(|_| ApiError::validation("body", "unexpected data after the JSON object"))?;
    Ok(value)
}

/// The field a serde message is about, when it names one: `missing field `x``, `unknown field
/// `x`, expected one of …`, `duplicate field `x``.
fn named_field(message: &str) -> Option<&str> {
    ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))?
        .split('`')
        .next()
}

fn strip_position(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}
