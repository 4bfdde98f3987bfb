//! A real SMTP server for tests: aiosmtpd from the interop virtualenv on a free loopback port,
//! with the `interop/python/smtp_sink.py` handler, which keeps every message byte for byte.
//! Messages are parsed back with `mail-parser` (MIME, RFC 2047 encoded words, charsets).
//!
//! Recipients whose local part starts with `tempfail` are refused with `451`, those starting with
//! `reject` with `550`, so an SMTP client's retry policy can be tested against a real server. A
//! message to a recipient starting with `hold` is stored at once but answered `250` only after
//! [`SmtpSink::release_held`]. A message to `slow<ms>…@…` is stored at once and answered `250`
//! after `ms` milliseconds (at most 10 s): a slow server, for stopping a client while it waits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders, PartType};

use crate::process::ChildGuard;
use crate::{free_port, python, temp_dir, wait_for_port};

/// How many times a port taken between [`free_port`] and aiosmtpd's bind is retried.
const START_ATTEMPTS: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running SMTP server; killed on drop.
#[derive(Debug)]
pub struct SmtpSink {
    pub port: u16,
    mail_dir: PathBuf,
    // Field order: the server stops (and its log is shown on panic) before the directory goes.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

/// One received message: the SMTP envelope, the parsed content and the raw bytes.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Envelope recipients (`RCPT TO`), which include Bcc recipients.
    pub to: Vec<String>,
    /// The decoded `Subject` header (RFC 2047 encoded words decoded), empty if none.
    pub subject: String,
    /// The first `text/plain` body part, decoded (`None` if the message has none; not a
    /// conversion from HTML).
    pub text: Option<String>,
    /// The first `text/html` body part, decoded (`None` if the message has none).
    pub html: Option<String>,
    /// Top-level header fields in order: name as written, value decoded (text and address
    /// fields) or else the raw value unfolded.
    pub headers: Vec<(String, String)>,
    pub attachments: Vec<Attachment>,
    /// The message exactly as received in `DATA`.
    pub raw: Vec<u8>,
}

/// A part that is an attachment (e.g. the invoice PDF).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: Option<String>,
    /// `type/subtype`, lowercase.
    pub content_type: String,
    /// Transfer-decoded bytes.
    pub data: Vec<u8>,
}

impl ReceivedMail {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses a raw message; `from` and `to` are the envelope addresses.
    pub fn parse(from: String, to: Vec<String>, raw: Vec<u8>) -> anyhow::Result<ReceivedMail> {
        let message = MessageParser::default()
            .parse(&raw)
            .context("mail-parser cannot parse the message")?;
        let subject = message.subject().unwrap_or_default().to_owned();
        // text_body/html_body may point at the other format's part (RFC 8621 fallback); only a
        // part of the right type counts.
        let text = message
            .text_body
            .iter()
            .filter_map(|&id| message.part(id))
            .find_map(|part| match &part.body {
                PartType::Text(text) => Some(text.to_string()),
                _ => None,
            });
        let html = message
            .html_body
            .iter()
            .filter_map(|&id| message.part(id))
            .find_map(|part| match &part.body {
                PartType::Html(html) => Some(html.to_string()),
                _ => None,
            });
        let headers = message
            .headers()
            .iter()
            .map(|header| {
                let raw_value = raw
                    .get(header.offset_start as usize..header.offset_end as usize)
                    .unwrap_or_default();
                (
                    header.name().to_owned(),
                    header_text(header.value(), raw_value),
                )
            })
            .collect();
        let attachments = message
            .attachments()
            .map(|part| Attachment {
                filename: part.attachment_name().map(str::to_owned),
                content_type: part
                    .content_type()
                    .map(|ct| match ct.subtype() {
                        Some(sub) => format!("{}/{}", ct.ctype(), sub),
                        None => ct.ctype().to_owned(),
                    })
                    .unwrap_or_else(|| "application/octet-stream".to_owned())
                    .to_ascii_lowercase(),
                data: part.contents().to_vec(),
            })
            .collect();
        Ok(ReceivedMail {
            from,
            to,
            subject,
            text,
            html,
            headers,
            attachments,
            raw,
        })
    }
}

fn header_text(value: &HeaderValue<'_>, raw: &[u8]) -> String {
    match value {
        HeaderValue::Text(text) => return text.to_string(),
        HeaderValue::TextList(list) => return list.join(", "),
        HeaderValue::Address(addresses) => {
            let mailboxes: Vec<String> = addresses
                .iter()
                .map(|mailbox| match (mailbox.name(), mailbox.address()) {
                    (Some(name), Some(address)) => format!("{name} <{address}>"),
                    (None, Some(address)) => address.to_owned(),
                    (Some(name), None) => name.to_owned(),
                    (None, None) => String::new(),
                })
                .collect();
            if !mailboxes.is_empty() {
                return mailboxes.join(", ");
            }
        }
        _ => {}
    }
    // Unfold: drop line breaks, keep the folding whitespace.
    String::from_utf8_lossy(raw)
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_owned()
}

impl SmtpSink {
    /// Starts aiosmtpd on a free 127.0.0.1 port and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<SmtpSink> {
        let venv_python = tokio::task::spawn_blocking(python::python).await??;
        let dir = temp_dir("smtp")?;
        let mail_dir = dir.path().join("mail");
        std::fs::create_dir_all(&mail_dir)?;

        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let log = dir.path().join(format!("aiosmtpd-{attempt}.log"));
            let mut cmd = Command::new(&venv_python);
            cmd.args(["-m", "aiosmtpd", "-n", "-u", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "smtp_sink.Sink"])
                .arg(&mail_dir)
                .env("PYTHONPATH", python::interop_dir())
                .env("PYTHONUNBUFFERED", "1");
            let mut child = ChildGuard::spawn_logged(&mut cmd, &log)?;
            match wait_ready(&mut child, port).await {
                Ok(()) => {
                    return Ok(SmtpSink {
                        port,
                        dir,
                        mail_dir,
                        child,
                    });
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("aiosmtpd did not start")))
    }

    /// `smtp://127.0.0.1:<port>` (plain SMTP, no TLS, no authentication).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Lets the server answer `250` to the messages to `hold…` recipients it holds, and to those
    /// it receives from now on.
    pub fn release_held(&self) -> anyhow::Result<()> {
        std::fs::write(self.mail_dir.join("release"), b"")
            .context("cannot write the release file")?;
        Ok(())
    }

    /// Where the raw messages are stored (`NNNNNN.eml` + `NNNNNN.json` envelope).
    pub fn mail_dir(&self) -> &Path {
        &self.mail_dir
    }

    /// The server's log file, for failure messages.
    pub fn log_path(&self) -> Option<&Path> {
        self.child.log_path()
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> anyhow::Result<Vec<ReceivedMail>> {
        let mut envelopes: Vec<PathBuf> = std::fs::read_dir(&self.mail_dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        envelopes.sort();
        envelopes
            .iter()
            .map(|envelope_path| {
                let envelope: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(envelope_path)?)
                        .with_context(|| format!("bad envelope {}", envelope_path.display()))?;
                let from = envelope["mail_from"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let to = envelope["rcpt_tos"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let raw = std::fs::read(envelope_path.with_extension("eml"))?;
                ReceivedMail::parse(from, to, raw)
                    .with_context(|| format!("message {}", envelope_path.display()))
            })
            .collect()
    }

    /// Waits until at least `n` messages have arrived and returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<ReceivedMail>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages()?;
            if messages.len() >= n {
                return Ok(messages);
            }
            if Instant::now() >= deadline {
                bail!(
                    "SMTP sink on port {} received {} message(s), expected {n}, within {timeout:?}; {}",
                    self.port,
                    messages.len(),
                    self.child.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The directory holding the mail and logs (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

async fn wait_ready(child: &mut ChildGuard, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "aiosmtpd exited ({status}) on port {port}: {}",
                child.describe()
            );
        }
        // The greeting proves it is our aiosmtpd, not whoever else grabbed the port meanwhile.
        if let Ok(banner) = greeting(port).await {
            if banner.starts_with("220") && banner.contains("Python SMTP") {
                return Ok(());
            }
            bail!("port {port} answers {banner:?}, not aiosmtpd");
        }
        if Instant::now() >= deadline {
            bail!(
                "aiosmtpd did not listen on port {port} within {START_TIMEOUT:?}: {}",
                child.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn greeting(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    wait_for_port(port, Duration::from_millis(100)).await?;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await??;
    let _ = reader.get_mut().write_all(b"QUIT\r\n").await;
    Ok(line.trim_end().to_owned())
}
