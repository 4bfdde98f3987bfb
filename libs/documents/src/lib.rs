//! Documents: PDFs whose Korean text renders and extracts, charts drawn into them, and the
//! object store they are written to.
//!
//! - [`font`]: the font every document is set in. Hangul needs a font that has its glyphs; it is
//!   taken from the system's font packages (`fonts-nanum` by default, `PDF_FONT` to choose
//!   another), checked at start, and embedded subset into each PDF (krilla), with a `ToUnicode`
//!   map so `pdftotext` and a reader's search find the text.
//! - [`pdf`]: [`Layout`], a page flow of headings, paragraphs, tables and charts on A4, turned into
//!   PDF bytes by [`Layout::finish`].
//! - [`chart`]: bar and line charts drawn by plotters as SVG and placed into the PDF as vectors.
//! - [`storage`]: `STORAGE_URL` / `STORAGE_DIR`, the object store (`object_store`) that keeps
//!   invoices, reports and log archives: a local directory, or an S3-compatible bucket.

pub mod chart;
pub mod font;
pub mod pdf;
pub mod storage;

pub use chart::{BarChart, LineChart};
pub use font::{DocumentFont, FontSettings};
pub use pdf::{Align, Column, Layout};
pub use storage::{Storage, StorageLocation, StorageSettings, Stored};

/// Why a document could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("font {path}: {message}")]
    Font { path: String, message: String },
    #[error("chart: {0}")]
    Chart(String),
    #[error("PDF: {0}")]
    Pdf(String),
}
