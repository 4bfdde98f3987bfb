//! Every environment variable each binary reads, taken from the binaries' own settings code
//! (`ServiceSettings::read` run over an empty environment records every variable it asks for),
//! so the README's configuration table can be checked against it (`tests/readme.rs`) and its
//! rows printed (`cargo run -p shopfds-config-checks`).

use std::collections::BTreeMap;

use shopfds_service::variables;

/// The six binaries, in the README's order.
pub const BINARIES: [&str; 6] = [
    "order-api",
    "email-worker",
    "fds-worker",
    "report-worker",
    "beat-scheduler",
    "dlq-reprocessor",
];

/// Variable → the binaries that read it (in [`BINARIES`] order).
pub fn readers() -> BTreeMap<String, Vec<&'static str>> {
    let read = [
        variables::<order_api::Settings>(),
        variables::<email_worker::Settings>(),
        variables::<fds_worker::Settings>(),
        variables::<report_worker::Settings>(),
        variables::<beat_scheduler::Settings>(),
        variables::<dlq_reprocessor::Settings>(),
    ];
    let mut readers: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for (binary, variables) in BINARIES.iter().zip(read) {
        for variable in variables {
            readers.entry(variable).or_default().push(binary);
        }
    }
    readers
}

/// The README's "read by" cell for these binaries: `all six`, or their names.
pub fn read_by(binaries: &[&str]) -> String {
    if binaries.len() == BINARIES.len() {
        "all six".to_owned()
    } else {
        binaries.join(", ")
    }
}
