//! Compressed bodies, as kombu sends them (`compression=` of `apply_async` / `send_task`, or
//! Celery's `task_compression`): the body is the serialized message compressed as a whole, and
//! the `compression` header names the method by its content type (kombu resolves an alias such
//! as `zlib` to `application/x-gzip` before it sends).
//!
//! | header (kombu's content type) | aliases kombu accepts | read as |
//! |---|---|---|
//! | `application/x-gzip` | `gzip`, `zlib` | zlib (what Python's `zlib.compress` writes); a gzip stream too |
//! | `application/x-bz2` | `bzip2`, `bzip` | bzip2 |
//! | `application/x-lzma` | `lzma`, `xz` | xz (Python's `lzma.compress`), or the legacy `.lzma` format |
//! | `application/zstd` | `zstd`, `zstandard` | Zstandard |
//!
//! Anything else (`application/x-brotli`, a method of one's own) is refused with a reason naming
//! it. The decompressed size is bounded: a body that inflates past the caller's limit is refused
//! once the limit is reached (a zip bomb costs the limit, not the bomb), and the xz decoder's
//! memory is capped too.

use std::borrow::Cow;
use std::io::Read;

use serde_json::{Map, Value};

use crate::message::ProtocolError;

/// The header kombu writes.
pub const COMPRESSION_HEADER: &str = "compression";

/// The most memory the xz decoder may take for its dictionary: Python's presets use at most
/// 64 MiB (preset 9); an xz header asking for more is refused rather than allocated.
const XZ_MEMORY_LIMIT: u64 = 64 * 1024 * 1024;

/// A compression method the worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    /// The method a `compression` header names (kombu's content type or one of its aliases,
    /// case-insensitive); `None` when the worker cannot read it.
    pub fn from_header(value: &str) -> Option<Compression> {
        match value.trim().to_ascii_lowercase().as_str() {
            "application/x-gzip" | "gzip" | "zlib" => Some(Compression::Zlib),
            "application/x-bz2" | "bzip2" | "bzip" => Some(Compression::Bzip2),
            "application/x-lzma" | "lzma" | "xz" => Some(Compression::Xz),
            "application/zstd" | "zstd" | "zstandard" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// `body` decompressed, at most `limit` bytes of it.
    pub fn decompress(self, body: &[u8], limit: usize) -> Result<Vec<u8>, ProtocolError> {
        let name = self.name();
        let failed = |e: std::io::Error| ProtocolError::Decompression {
            method: name,
            message: e.to_string(),
        };
        match self {
            // kombu's `application/x-gzip` is zlib's format; a gzip stream (another client's
            // reading of the name) starts with its magic bytes and is read as gzip.
            Compression::Zlib if body.starts_with(&[0x1f, 0x8b]) => {
                bounded(flate2::read::MultiGzDecoder::new(body), limit, name)
            }
            Compression::Zlib => bounded(flate2::read::ZlibDecoder::new(body), limit, name),
            Compression::Bzip2 => bounded(bzip2::read::MultiBzDecoder::new(body), limit, name),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_auto_decoder(XZ_MEMORY_LIMIT, 0)
                    .map_err(|e| failed(e.into()))?;
                bounded(
                    liblzma::read::XzDecoder::new_stream(body, stream),
                    limit,
                    name,
                )
            }
            Compression::Zstd => {
                let decoder = ruzstd::decoding::StreamingDecoder::new(body).map_err(|e| {
                    ProtocolError::Decompression {
                        method: name,
                        message: e.to_string(),
                    }
                })?;
                bounded(decoder, limit, name)
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// The body as its serializer wrote it: decompressed when the headers carry `compression`,
/// else `body` itself. `limit` bounds the decompressed size.
pub fn decompressed<'a>(
    headers: &Map<String, Value>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, ProtocolError> {
    let Some(value) = headers.get(COMPRESSION_HEADER) else {
        return Ok(Cow::Borrowed(body));
    };
    let named = match value {
        Value::Null => return Ok(Cow::Borrowed(body)),
        Value::String(s) if s.is_empty() => return Ok(Cow::Borrowed(body)),
        Value::String(s) => s.as_str(),
        _ => {
            return Err(ProtocolError::InvalidHeader {
                header: COMPRESSION_HEADER,
                message: "must be a string".to_owned(),
            });
        }
    };
    let method = Compression::from_header(named)
        .ok_or_else(|| ProtocolError::UnsupportedCompression(named.to_owned()))?;
    method.decompress(body, limit).map(Cow::Owned)
}

/// Reads `decoder` to its end, refusing output past `limit` bytes.
fn bounded(
    decoder: impl Read,
    limit: usize,
    method: &'static str,
) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| ProtocolError::Decompression {
            method,
            message: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(ProtocolError::DecompressedTooLarge { method, limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde_json::json;

    use super::*;

    const BODY: &[u8] = br#"[[], {"order_id": "o-1"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;

    fn headers(compression: &str) -> Map<String, Value> {
        json!({"task": "t", "id": "1", "compression": compression})
            .as_object()
            .cloned()
            .unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn kombu_names_and_aliases_are_recognised() {
        for (name, method) in [
            ("application/x-gzip", Compression::Zlib),
            ("zlib", Compression::Zlib),
            ("gzip", Compression::Zlib),
            ("application/x-bz2", Compression::Bzip2),
            ("bzip", Compression::Bzip2),
            ("application/x-lzma", Compression::Xz),
            ("xz", Compression::Xz),
            ("application/zstd", Compression::Zstd),
            ("zstandard", Compression::Zstd),
        ] {
            assert_eq!(Compression::from_header(name), Some(method), "{name}");
        }
        assert_eq!(Compression::from_header("application/x-brotli"), None);
    }

    #[test]
    fn zlib_and_gzip_bodies_are_read() {
        let packed = zlib(BODY);
        let out = decompressed(&headers("application/x-gzip"), &packed, 1 << 20).unwrap();
        assert_eq!(&*out, BODY);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(BODY).unwrap();
        let gz = e.finish().unwrap();
        let out = decompressed(&headers("gzip"), &gz, 1 << 20).unwrap();
        assert_eq!(&*out, BODY);
    }

    #[test]
    fn bzip2_bodies_are_read() {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(BODY).unwrap();
        let packed = e.finish().unwrap();
        let out = decompressed(&headers("application/x-bz2"), &packed, 1 << 20).unwrap();
        assert_eq!(&*out, BODY);
    }

    #[test]
    fn xz_and_zstd_bodies_are_read() {
        let xz = liblzma::encode_all(BODY, 6).unwrap();
        let out = decompressed(&headers("application/x-lzma"), &xz, 1 << 20).unwrap();
        assert_eq!(&*out, BODY);
        let zstd =
            ruzstd::encoding::compress_to_vec(BODY, ruzstd::encoding::CompressionLevel::Fastest);
        let out = decompressed(&headers("application/zstd"), &zstd, 1 << 20).unwrap();
        assert_eq!(&*out, BODY);
    }

    #[test]
    fn no_header_or_an_empty_one_leaves_the_body_alone() {
        let mut h = headers("");
        assert_eq!(&*decompressed(&h, BODY, 10).unwrap(), BODY);
        h.remove(COMPRESSION_HEADER);
        assert_eq!(&*decompressed(&h, BODY, 10).unwrap(), BODY);
    }

    #[test]
    fn an_unknown_method_or_a_corrupt_body_is_a_reason() {
        let err = decompressed(&headers("application/x-brotli"), BODY, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("application/x-brotli"), "{err}");
        let err = decompressed(&headers("zlib"), BODY, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("zlib"), "{err}");
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let bomb = zlib(&vec![b' '; 50 << 20]);
        assert!(bomb.len() < 100 << 10, "{}", bomb.len());
        let err = decompressed(&headers("zlib"), &bomb, 1 << 20).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::DecompressedTooLarge {
                method: "zlib",
                limit: 1 << 20
            }
        );
        let exact = zlib(&vec![b' '; 1 << 20]);
        assert_eq!(
            decompressed(&headers("zlib"), &exact, 1 << 20)
                .unwrap()
                .len(),
            1 << 20
        );
    }
}
