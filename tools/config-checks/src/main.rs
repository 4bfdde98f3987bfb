//! Prints the first two columns of the README's configuration table, from the settings code:
//! `| VARIABLE | read by |`, one row per variable.

fn main() {
    for (variable, binaries) in shopfds_config_checks::readers() {
        println!(
            "| `{variable}` | {} |",
            shopfds_config_checks::read_by(&binaries)
        );
    }
}
