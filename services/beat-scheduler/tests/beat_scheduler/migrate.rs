//! `beat-scheduler migrate`, the migration Job of the Kubernetes manifests: on a fresh database
//! the other commands refuse to run with `DATABASE_MIGRATE=false` (naming the variable), `migrate`
//! applies the migrations under that same environment, and then they run.

use shopfds_service::Env;
use shopfds_testkit::pg::TestDatabase;

async fn cli(args: &[&str], env: &Env) -> anyhow::Result<String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    beat_scheduler::cli::run(&args, env).await
}

#[tokio::test]
async fn migrate_applies_the_migrations_that_services_without_migrating_require() {
    let db = TestDatabase::create().await.unwrap();
    let env = Env::from_pairs([
        ("DATABASE_URL", db.url()),
        ("DATABASE_MIGRATE", "false".into()),
    ]);

    let refused = cli(&["list"], &env).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("DATABASE_MIGRATE"),
        "{refused:#}"
    );

    let out = cli(&["migrate"], &env).await.unwrap();
    assert_eq!(out, "migrations applied\n");

    cli(&["list"], &env).await.unwrap();
}
