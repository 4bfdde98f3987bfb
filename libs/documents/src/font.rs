//! The font documents are set in: one TrueType/OpenType file with Hangul glyphs, read once at
//! start.
//!
//! No font file is part of the repository: `PDF_FONT` names one, or the first of
//! [`DEFAULT_FONTS`] that exists is taken (the setup script and the container image install
//! Debian's `fonts-nanum`). A font without Hangul glyphs is refused at start with the reason,
//! rather than giving invoices of empty boxes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ab_glyph::{Font as _, FontArc};
use shopfds_config::{ConfigError, Env};

use crate::DocumentError;

/// Looked for in this order when `PDF_FONT` is unset: Debian's `fonts-nanum`, `fonts-unfonts-core`
/// and `fonts-baekmuk`.
pub const DEFAULT_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/nanum/NanumGothic.ttf",
    "/usr/share/fonts/truetype/nanum/NanumBarunGothic.ttf",
    "/usr/share/fonts/truetype/unfonts-core/UnDotum.ttf",
    "/usr/share/fonts/truetype/baekmuk/gulim.ttf",
];

/// `PDF_FONT`: the font file, or `None` to look through [`DEFAULT_FONTS`].
#[derive(Debug, Clone, Default)]
pub struct FontSettings {
    pub path: Option<PathBuf>,
}

impl FontSettings {
    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(FontSettings {
            path: env.file("PDF_FONT")?,
        })
    }

    /// The file to load: `PDF_FONT`, else the first of [`DEFAULT_FONTS`] that exists.
    pub fn resolve(&self) -> Result<PathBuf, DocumentError> {
        if let Some(path) = &self.path {
            return Ok(path.clone());
        }
        DEFAULT_FONTS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| DocumentError::Font {
                path: DEFAULT_FONTS.join(", "),
                message: "none of these exists: install Debian's fonts-nanum (make demo and \
                          make test do) or set PDF_FONT to a TrueType font with Hangul glyphs"
                    .to_owned(),
            })
    }

    /// Resolves and loads the font.
    pub fn load(&self) -> Result<DocumentFont, DocumentError> {
        DocumentFont::load(&self.resolve()?)
    }
}

/// A loaded font: what krilla embeds, what measures text widths, and the family name charts
/// ask for. Cheap to clone.
#[derive(Clone)]
pub struct DocumentFont {
    path: PathBuf,
    bytes: Arc<Vec<u8>>,
    pdf: krilla::text::Font,
    metrics: FontArc,
    family: String,
}

impl std::fmt::Debug for DocumentFont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentFont")
            .field("path", &self.path)
            .field("family", &self.family)
            .finish()
    }
}

impl DocumentFont {
    /// Reads `path` and checks that it can set Korean text (`가`, `힣` and the digits).
    pub fn load(path: &Path) -> Result<DocumentFont, DocumentError> {
        let fail = |message: String| DocumentError::Font {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let metrics = FontArc::try_from_vec(bytes.clone())
            .map_err(|e| fail(format!("not a TrueType/OpenType font: {e}")))?;
        if let Some(missing) = ['가', '힣', '0', 'A', '₩']
            .into_iter()
            .find(|c| metrics.glyph_id(*c).0 == 0)
        {
            return Err(fail(format!(
                "has no glyph for {missing:?}: documents need a font with Hangul glyphs"
            )));
        }
        let bytes = Arc::new(bytes);
        let pdf = krilla::text::Font::new(krilla::Data::from(bytes.clone()), 0)
            .ok_or_else(|| fail("krilla cannot read it".to_owned()))?;
        let family = family_name(&bytes).unwrap_or_else(|| "sans-serif".to_owned());
        Ok(DocumentFont {
            path: path.to_owned(),
            bytes,
            pdf,
            metrics,
            family,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The family name in the font's name table (`NanumGothic`).
    pub fn family(&self) -> &str {
        &self.family
    }

    pub(crate) fn pdf(&self) -> krilla::text::Font {
        self.pdf.clone()
    }

    pub(crate) fn bytes(&self) -> Arc<Vec<u8>> {
        self.bytes.clone()
    }

    /// The width of `text` set at `size` points, from the font's advances (no kerning).
    pub fn width(&self, text: &str, size: f32) -> f32 {
        let units = self.metrics.units_per_em().unwrap_or(1000.0);
        let advance: f32 = text
            .chars()
            .map(|c| self.metrics.h_advance_unscaled(self.metrics.glyph_id(c)))
            .sum();
        advance * size / units
    }

    /// Registers this font with plotters as its `sans-serif` (plotters keeps fonts in a
    /// process-wide table and wants them for the life of the process: the first font registered
    /// stays, its bytes are kept once).
    pub(crate) fn register_with_plotters(&self) -> Result<(), DocumentError> {
        static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
        REGISTERED
            .get_or_init(|| {
                let kept: &'static [u8] = Box::leak(self.bytes.to_vec().into_boxed_slice());
                plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    kept,
                )
                .map_err(|_| format!("plotters cannot read {}", self.path.display()))
            })
            .clone()
            .map_err(DocumentError::Chart)
    }
}

fn family_name(bytes: &[u8]) -> Option<String> {
    let mut db = usvg::fontdb::Database::new();
    db.load_font_data(bytes.to_vec());
    let face = db.faces().next()?;
    face.families.first().map(|(name, _)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_font_file_is_named() {
        let settings = FontSettings {
            path: Some(PathBuf::from("/nonexistent/font.ttf")),
        };
        let err = settings.load().err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("/nonexistent/font.ttf")),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_that_is_no_font_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ttf");
        std::fs::write(&path, b"not a font").unwrap();
        let err = DocumentFont::load(&path).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("not a TrueType")),
            "{err:?}"
        );
    }
}
