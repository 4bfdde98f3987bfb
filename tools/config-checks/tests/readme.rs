//! The README's configuration table lists exactly the variables the binaries read, each with
//! exactly the binaries that read it (taken from their settings code).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

/// Rows of the first table under `## Configuration`: variable → its "read by" cell.
fn readme_rows() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a ## Configuration section");
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in section.lines() {
        if line.starts_with("| variable |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("| ---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let variable = cells[1].trim_matches('`').to_owned();
        assert!(
            rows.insert(variable.clone(), cells[2].to_owned()).is_none(),
            "{variable} has two rows"
        );
    }
    rows
}

#[test]
fn the_readme_table_lists_every_variable_and_who_reads_it() {
    let rows = readme_rows();
    let readers = shopfds_config_checks::readers();
    let mut problems = Vec::new();
    for (variable, binaries) in &readers {
        let expected = shopfds_config_checks::read_by(binaries);
        match rows.get(variable) {
            None => problems.push(format!("missing row: | `{variable}` | {expected} |")),
            Some(cell) if *cell != expected => problems.push(format!(
                "`{variable}`: read by {expected:?}, the README says {cell:?}"
            )),
            Some(_) => {}
        }
    }
    for variable in rows.keys() {
        if !readers.contains_key(variable) {
            problems.push(format!("`{variable}`: no binary reads it"));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md's configuration table disagrees with the settings code \
         (`cargo run -p shopfds-config-checks` prints the expected first two columns):\n{}",
        problems.join("\n")
    );
}
