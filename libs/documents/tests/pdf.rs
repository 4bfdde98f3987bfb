//! A document made the way invoices and reports are, read back with poppler's `pdftotext` and
//! `pdffonts` (Debian's poppler-utils, installed by the setup script): the Korean text and the
//! charts' labels extract, the font is embedded as a subset, a long table runs onto a second
//! page with its header repeated.

use std::process::Command;

use shopfds_documents::{BarChart, Column, FontSettings, Layout, LineChart};

fn tool(name: &str, args: &[&str], pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let path = dir.path().join("doc.pdf");
    std::fs::write(&path, pdf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut command = Command::new(name);
    command.args(args).arg(&path);
    if name == "pdftotext" {
        command.arg("-");
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{name} (poppler-utils; `make test` installs it): {e}"));
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn korean_text_tables_and_charts_extract_from_the_pdf() {
    let font = FontSettings::default().load().unwrap();
    let mut doc = Layout::new(&font, "청구서 테스트");
    doc.title("청구서 / Invoice");
    doc.key_values(&[
        (
            "주문번호",
            "5f0c6a52-7c0e-4d8a-9d0b-3a1c2b4e5f60".to_owned(),
        ),
        ("배송지", "세종대로 110, Seoul 04524, KR".to_owned()),
    ]);
    doc.heading("품목");
    let columns = [
        Column::left("상품", 4.0),
        Column::right("수량", 1.0),
        Column::right("금액", 2.0),
    ];
    let rows: Vec<Vec<String>> = (1..=60)
        .map(|i| {
            vec![
                format!("무선 키보드 {i}"),
                i.to_string(),
                format!("₩{},000", 45 * i),
            ]
        })
        .collect();
    doc.table(&columns, &rows);
    doc.totals(&[("합계", "₩90,000".to_owned())]);
    let bars = BarChart {
        title: "일별 매출".to_owned(),
        labels: vec!["11-01".to_owned(), "11-02".to_owned()],
        values: vec![90000.0, 45000.0],
    };
    doc.chart(&bars.svg(&font).unwrap(), 200.0).unwrap();
    let lines = LineChart {
        title: "FDS 결정".to_owned(),
        labels: vec!["11-01".to_owned(), "11-02".to_owned()],
        series: vec![
            ("APPROVE".to_owned(), vec![3.0, 4.0]),
            ("BLOCK".to_owned(), vec![1.0, 0.0]),
        ],
    };
    doc.chart(&lines.svg(&font).unwrap(), 200.0).unwrap();
    assert!(
        doc.page_count() >= 2,
        "60 rows and two charts fit one page?"
    );
    let pdf = doc.finish().unwrap();
    if let Ok(out) = std::env::var("DOCUMENTS_TEST_PDF") {
        std::fs::write(out, &pdf).unwrap();
    }
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(
        pdf.len() < 400_000,
        "the font is subset: {} bytes",
        pdf.len()
    );

    let text = tool("pdftotext", &["-layout"], &pdf);
    for expected in [
        "청구서 / Invoice",
        "주문번호",
        "세종대로 110",
        "무선 키보드 1",
        "무선 키보드 60",
        "₩90,000",
        "일별 매출",
        "FDS 결정",
        "APPROVE",
        "11-02",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // The header of the table is printed again on the page it runs onto.
    assert!(text.matches("수량").count() >= 2, "{text}");
    assert!(
        text.contains("1 / ") || text.contains("1/"),
        "page numbers: {text}"
    );

    let fonts = tool("pdffonts", &[], &pdf);
    let family = font.family();
    let line = fonts
        .lines()
        .find(|l| l.contains(family))
        .unwrap_or_else(|| panic!("{family} not embedded:\n{fonts}"));
    // name+subset tag, then `emb sub uni` all yes.
    assert!(line.contains("yes yes yes"), "{line}");
}
