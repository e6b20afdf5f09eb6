//! Moving a store from SQLite to PostgreSQL with `mailsync store-copy`: every row arrives,
//! and a daemon on the copy carries on where the SQLite one stopped (cursors, sealed
//! passwords, links, ids) without fetching the mailbox again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use common::*;
use serde_json::Value;

async fn table_count(store: &mailsync::store::Store, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
}

#[tokio::test]
async fn a_sqlite_store_moves_to_postgresql_and_the_daemon_carries_on() {
    let user = "mo@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-mo")]);
    let corpus: Vec<String> = (0..40)
        .map(|i| message("client@acme.example", user, &format!("m{i}"), &format!("move-{i}@acme.example"), "hello"))
        .collect();
    dovecot.write_maildir(user, "", &corpus);

    let sqlite = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, sqlite.url(), "");
    let account = add_account(d, sqlite.url(), &dovecot, user, "pw-mo");
    ok(mailsync(d, sqlite.url()).args(["contact", "add", "--name", "Client", "--email", "client@acme.example"]));
    let mut daemon = Daemon::start(d, sqlite.url());
    let source = sqlite.store().await;
    wait_initial_sync(&source, account, 2).await;
    poll_async(SYNC_DEADLINE, "the past mail linked to the contact", || async {
        (table_count(&source, "message_links").await >= 40).then_some(())
    })
    .await;
    assert!(daemon.terminate().success());

    // Refused: a SQLite target, and (below) a target that is not empty.
    let other = TestDb::sqlite();
    let out = output(mailsync(d, sqlite.url()).args(["store-copy", "--to", other.url()]));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("moves a SQLite store to PostgreSQL"), "{}", out.stderr);

    let pg = TestDb::postgres();
    let summary: Value =
        serde_json::from_str(&ok(mailsync(d, sqlite.url()).args(["store-copy", "--json", "--to", pg.url()]))).unwrap();
    let target = pg.store().await;
    let tables = summary["tables"].as_array().unwrap();
    assert!(tables.len() >= 20, "{summary}");
    for t in tables {
        let name = t["table"].as_str().unwrap();
        assert_eq!(t["rows"].as_i64(), Some(table_count(&source, name).await), "{name} in the summary");
        assert_eq!(table_count(&target, name).await, table_count(&source, name).await, "{name} copied");
    }
    assert_eq!(table_count(&target, "messages").await, 40);

    let out = output(mailsync(d, sqlite.url()).args(["store-copy", "--to", pg.url()]));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);

    // The daemon on PostgreSQL: the sealed password opens with the same key, the cursor
    // holds (nothing fetched again), new ids continue after the copied ones, and new mail
    // from the contact links to it.
    let config = std::fs::read_to_string(d.join("mailsync.toml")).unwrap();
    std::fs::write(d.join("mailsync.toml"), config.replace(sqlite.url(), pg.url())).unwrap();
    let max_id: i64 = sqlx::query_scalar("SELECT MAX(id) FROM messages").fetch_one(target.pool()).await.unwrap();
    let _daemon = Daemon::start(d, pg.url());
    dovecot.deliver(user, &message("client@acme.example", user, "after the move", "after-move@acme.example", "hi"));
    wait_for_message(&target, "after-move@acme.example", SYNC_DEADLINE).await;
    assert_eq!(table_count(&target, "messages").await, 41, "no message fetched twice");
    let new_id: i64 = sqlx::query_scalar("SELECT id FROM messages WHERE message_id = 'after-move@acme.example'")
        .fetch_one(target.pool())
        .await
        .unwrap();
    assert!(new_id > max_id, "ids continue after the copied ones ({new_id} <= {max_id})");
    let contact: i64 = sqlx::query_scalar("SELECT id FROM contacts").fetch_one(target.pool()).await.unwrap();
    poll_async(SYNC_DEADLINE, "the new message linked", || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_links WHERE message_id = $1 AND entity_id = $2")
            .bind(new_id)
            .bind(contact)
            .fetch_one(target.pool())
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await;
}
