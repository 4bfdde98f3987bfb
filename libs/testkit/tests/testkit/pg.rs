//! TestDatabase: an empty database of its own, dropped on drop even with open connections.

use shopfds_testkit::pg::TestDatabase;
use sqlx::Connection;

async fn database_exists(name: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    count == 1
}

#[tokio::test]
async fn create_use_and_drop_a_database() {
    let db = TestDatabase::create().await.unwrap();
    assert!(db.name.starts_with("shopfds_test_"));
    assert_eq!(
        db.url(),
        format!("postgres://postgres@127.0.0.1:5432/{}", db.name)
    );

    let pool = db.pool().await.unwrap();
    sqlx::query("CREATE TABLE orders (id text PRIMARY KEY, note text NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders VALUES ('o-1', '김민수')")
        .execute(&pool)
        .await
        .unwrap();
    let note: String = sqlx::query_scalar("SELECT note FROM orders WHERE id = 'o-1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(note, "김민수");

    // The pool is still open: the drop must force it out.
    let name = db.name.clone();
    assert!(database_exists(&name).await);
    drop(db);
    assert!(
        !database_exists(&name).await,
        "database {name} still exists after drop"
    );
    pool.close().await;
}

#[tokio::test]
async fn databases_are_independent() {
    let (a, b) = (
        TestDatabase::create().await.unwrap(),
        TestDatabase::create().await.unwrap(),
    );
    assert_ne!(a.name, b.name);
    let pool = a.pool().await.unwrap();
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&pool)
        .await
        .unwrap();
    let pool_b = b.pool().await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&pool_b)
    .await
    .unwrap();
    assert_eq!(tables, 0);

    let names = [a.name.clone(), b.name.clone()];
    drop((a, b));
    for name in names {
        assert!(
            !database_exists(&name).await,
            "database {name} still exists after drop"
        );
    }
}
