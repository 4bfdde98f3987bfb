//! JSON written the way Python's `json.dumps` (and so kombu) writes it: `", "` and `": "` as
//! separators and every non-ASCII character escaped as `\uXXXX`. Bodies we publish are then
//! byte-for-byte what a Python Celery client publishes for the same call, and Python's `repr`
//! for the `argsrepr`/`kwargsrepr` headers Flower shows.

use std::io;

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CharEscape, Formatter, Serializer};

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // Python writes control characters as \u00XX, like serde_json, and the short forms
        // for \n, \r, \t, \b, \f, \", \\: the default already matches.
        serde_json::ser::CompactFormatter.write_char_escape(w, escape)
    }
}

/// Serializes `value` as Python's `json.dumps(value)` would.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    let mut ser = Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Python's `repr()` of a JSON value (what Celery puts in `argsrepr` and `kwargsrepr`).
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(value, &mut out);
    out
}

/// `repr(tuple(args))`: `()` when empty, `('a',)` for one element.
pub fn repr_args(args: &[Value]) -> String {
    match args {
        [] => "()".to_owned(),
        [one] => format!("({},)", repr(one)),
        many => {
            let inner: Vec<String> = many.iter().map(repr).collect();
            format!("({})", inner.join(", "))
        }
    }
}

fn write_repr(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str_repr(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str_repr(k, out);
                out.push_str(": ");
                write_repr(v, out);
            }
            out.push('}');
        }
    }
}

fn write_str_repr(s: &str, out: &mut String) {
    // Python picks double quotes only when the text has a single quote and no double quote.
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn writes_like_python_json_dumps() {
        // python3 -c 'import json; print(json.dumps([[], {"name": "무선 키보드", "n": 2}, None]))'
        let v = json!([[], {"name": "무선 키보드", "n": 2}, null]);
        let text = String::from_utf8(to_vec(&v).unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            text,
            r#"[[], {"name": "\ubb34\uc120 \ud0a4\ubcf4\ub4dc", "n": 2}, null]"#
        );
        // Astral characters become surrogate pairs, as in Python.
        let emoji = String::from_utf8(to_vec(&json!("📦")).unwrap_or_default()).unwrap_or_default();
        assert_eq!(emoji, r#""\ud83d\udce6""#);
    }

    #[test]
    fn reprs_like_python() {
        assert_eq!(
            repr(&json!({"order_id": "o-1", "n": 1, "ok": true, "x": null})),
            "{'order_id': 'o-1', 'n': 1, 'ok': True, 'x': None}"
        );
        assert_eq!(repr(&json!("it's")), "\"it's\"");
        assert_eq!(repr_args(&[json!("a")]), "('a',)");
        assert_eq!(repr_args(&[]), "()");
    }
}
