//! The IMAP sync engine against a real Dovecot: folder selection, skipping, push, crash
//! recovery, reconnects, UIDVALIDITY changes and error classification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use mailsync::store::{AccountState, Store};

fn many_recipients(n: usize) -> String {
    (0..n).map(|i| format!("r{i}@bulk.example")).collect::<Vec<_>>().join(", ")
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(store.pool()).await.unwrap()
}

#[tokio::test]
async fn syncs_inbox_and_sent_only_and_skips_mass_mail() {
    let user = "ann@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-ann")]);
    let mut inbox = Vec::new();
    for i in 0..20 {
        inbox.push(message(
            "bo@client.example",
            user,
            &format!("hello {i}"),
            &format!("in-{i}@client.example"),
            "body",
        ));
    }
    // Two mass mailings (150 and exactly 101 recipients) and one at the limit (100).
    inbox.push(message(
        "news@bulk.example",
        &many_recipients(150),
        "mass 150",
        "mass-150@bulk.example",
        "SECRET-BODY-150",
    ));
    inbox.push(message(
        "news@bulk.example",
        &many_recipients(101),
        "mass 101",
        "mass-101@bulk.example",
        "SECRET-BODY-101",
    ));
    inbox.push(message("news@bulk.example", &many_recipients(100), "mass 100", "mass-100@bulk.example", "body"));
    // The same message in INBOX and Sent (sent to oneself) is stored once.
    let both = message(user, user, "note to self", "self-1@example.com", "me");
    inbox.push(both.clone());
    dovecot.write_maildir(user, "", &inbox);
    let mut sent: Vec<String> = (0..5)
        .map(|i| message(user, "cy@client.example", &format!("sent {i}"), &format!("out-{i}@example.com"), "x"))
        .collect();
    sent.push(both);
    dovecot.write_maildir(user, ".Sent", &sent);
    dovecot.write_maildir(user, ".Archive", &[message("a@x.example", user, "archived", "arch-1@x.example", "x")]);
    dovecot.write_maildir(user, ".Trash", &[message("a@x.example", user, "trashed", "trash-1@x.example", "x")]);

    for db in TestDb::both() {
        let dir = tempfile::tempdir().unwrap();
        let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-ann");
        let daemon = Daemon::start(dir.path(), db.url());
        let store = db.store().await;
        wait_initial_sync(&store, account, 2).await;
        let label = db.label();

        // 20 + 1 (at limit) + 1 (self) in INBOX, 5 more in Sent; self counted once.
        assert_eq!(count(&store, "SELECT COUNT(*) FROM messages").await, 27, "{label}\n{}", daemon.log());
        assert_eq!(count(&store, "SELECT COUNT(*) FROM message_locations").await, 28, "{label}");
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM skipped WHERE reason = 'too_many_recipients'").await,
            2,
            "{label}"
        );
        let recipients: Vec<i64> = sqlx::query_scalar("SELECT recipients FROM skipped ORDER BY recipients")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(recipients, vec![101, 150]);
        let none: i64 =
            count(&store, "SELECT COUNT(*) FROM messages WHERE subject IN ('archived', 'trashed', 'mass 150')").await;
        assert_eq!(none, 0);
        let body: String =
            sqlx::query_scalar("SELECT body_text FROM messages WHERE message_id = 'in-3@client.example'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(body.trim(), "body");

        // Status reports both folders in sync.
        let status = ok(mailsync(dir.path(), db.url()).args(["status", "--json"]));
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let folders = &status["accounts"][0]["folders"];
        assert_eq!(folders.as_array().unwrap().len(), 2, "{status}");
        let inbox_status = folders.as_array().unwrap().iter().find(|f| f["role"] == "inbox").unwrap();
        assert_eq!(inbox_status["messages_stored"], 22);
        assert_eq!(inbox_status["messages_skipped"], 2);
        assert_eq!(inbox_status["initial_sync_complete"], true);
        let listed =
            ok(mailsync(dir.path(), db.url()).args(["messages", "list", "--account", &account.to_string(), "--json"]));
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 27);
        let self_note = listed.as_array().unwrap().iter().find(|m| m["message_id"] == "self-1@example.com").unwrap();
        assert_eq!(self_note["folders"], serde_json::json!(["inbox", "sent"]));
        drop(daemon);
    }

    // Proof from Dovecot's raw IMAP log: only INBOX and Sent were ever selected, and no
    // body part of a skipped message was ever fetched.
    let commands = dovecot.rawlog_commands();
    let selected: HashSet<String> = commands
        .lines()
        .filter_map(|l| {
            // Raw log lines are `<timestamp> <tag> <command> ...`.
            let mut words = l.split_whitespace().skip(1);
            let _tag = words.next()?;
            let verb = words.next()?.to_ascii_uppercase();
            (verb == "SELECT" || verb == "EXAMINE").then(|| words.next().unwrap_or("").trim_matches('"').to_string())
        })
        .collect();
    assert_eq!(selected, HashSet::from(["INBOX".to_string(), "Sent".to_string()]), "{commands}");
    assert!(!commands.contains("BODY.PEEK[]") && !commands.contains("RFC822 "), "never a whole message: {commands}");
    let skipped_uids = skipped_uids_in_inbox(&dovecot, user);
    assert_eq!(skipped_uids.len(), 2, "the mass mailings' UIDs");
    assert!(commands.contains("BODY.PEEK[1]"), "text parts were fetched at all");
    for line in commands.lines().filter(|l| l.contains("BODY.PEEK[1")) {
        let set = line.split_whitespace().nth(4).unwrap_or_default();
        for uid in expand_set(set) {
            assert!(!skipped_uids.contains(&uid), "body of skipped UID {uid} fetched: {line}");
        }
    }
}

/// UIDs Dovecot gave the mass mailings, read from its uidlist (`UID ... :filename` lines,
/// in the order the files were written: 21 and 22).
fn skipped_uids_in_inbox(dovecot: &Dovecot, user: &str) -> HashSet<u32> {
    let list = std::fs::read_to_string(dovecot.dir.path().join("mail").join(user).join("dovecot-uidlist")).unwrap();
    list.lines()
        .skip(1)
        .filter(|l| l.contains(".M20P") || l.contains(".M21P"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn expand_set(set: &str) -> Vec<u32> {
    set.split(',')
        .flat_map(|r| match r.split_once(':') {
            Some((a, b)) => {
                let (a, b) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                (a..=b).collect::<Vec<u32>>()
            }
            None => r.parse().ok().into_iter().collect(),
        })
        .collect()
}

#[tokio::test]
async fn lmtp_delivery_during_idle_is_stored_within_a_second() {
    let user = "dan@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-dan")]);
    dovecot.write_maildir(user, "", &[message("x@y.example", user, "old", "old-1@y.example", "x")]);
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-dan");
    let daemon = Daemon::start(dir.path(), db.url());
    let store = db.store().await;
    wait_initial_sync(&store, account, 2).await;
    // Let both folder connections settle into IDLE.
    poll_async(SYNC_DEADLINE, "account idle", || async {
        (store.account(account).await.ok()?.state == AccountState::Idle).then_some(())
    })
    .await;

    let mut latencies = Vec::new();
    for i in 0..5 {
        let id = format!("push-{i}@y.example");
        dovecot.deliver(user, &message("x@y.example", user, "pushed", &id, "x"));
        let delivered = Instant::now();
        wait_for_message(&store, &id, Duration::from_secs(30)).await;
        latencies.push(delivered.elapsed());
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(median < Duration::from_secs(1), "median push latency {median:?} ({latencies:?})\n{}", daemon.log());
    assert!(latencies.iter().all(|l| *l < Duration::from_secs(3)), "{latencies:?}");

    // The same pushes in /v1/metrics.
    let metrics = daemon.metrics();
    let count = metric(&metrics, "mailsync_push_latency_seconds_count").unwrap_or(0.0);
    assert!(count >= 5.0, "{metrics}");
    assert_eq!(metric(&metrics, "mailsync_push_latency_seconds_bucket{le=\"+Inf\"}"), Some(count));
    assert!(metric(&metrics, "mailsync_push_latency_seconds_bucket{le=\"1\"}").unwrap_or(0.0) >= 3.0, "{metrics}");
    assert_eq!(metric(&metrics, "mailsync_messages_stored{source=\"imap\"}"), Some(6.0), "{metrics}");
    assert_eq!(
        metric(&metrics, &format!("mailsync_account_state{{account=\"{account}\",state=\"idle\"}}")),
        Some(1.0),
        "{metrics}"
    );
    assert!(metric(&metrics, "mailsync_imap_connections_total").unwrap_or(0.0) >= 2.0, "{metrics}");
}

#[tokio::test]
async fn kill_9_during_initial_sync_then_restart_stores_each_message_once() {
    const N: usize = 8000;
    let user = "eve@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-eve")]);
    let corpus: Vec<String> = (0..N)
        .map(|i| message("x@y.example", user, &format!("m{i}"), &format!("bulk-{i}@y.example"), &"text ".repeat(50)))
        .collect();
    dovecot.write_maildir(user, "", &corpus);
    for (round, db) in TestDb::both().into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        // Small batches of a large mailbox: the sync must still be running when the test has
        // seen what it needs (an ETA takes half a second of the pass to appear; on SQLite
        // about 2,900 of the 8,000 messages are stored by then).
        write_config(dir.path(), db.url(), "batch_size = 10");
        let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-eve");
        let mut daemon = Daemon::start(dir.path(), db.url());
        let store = db.store().await;
        // A partial initial sync, for which status reports the progress, the rate and an ETA.
        let inbox = poll_async(SYNC_DEADLINE, "a partial initial sync with an ETA in status", || async {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(store.pool()).await.ok()?;
            let (_, status) = daemon.api("GET", "/v1/status", None);
            let inbox = status["accounts"][0]["folders"].as_array()?.iter().find(|f| f["role"] == "inbox")?.clone();
            (n >= 300 && inbox["eta_secs"].is_i64()).then_some(inbox)
        })
        .await;
        assert_eq!(inbox["initial_sync_complete"], false, "{inbox}");
        assert!(inbox["progress"].as_f64().is_some_and(|p| p > 0.0 && p < 1.0), "{inbox}");
        assert!(inbox["rate_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{inbox}");
        daemon.child.kill().unwrap(); // SIGKILL: no chance to clean up
        daemon.child.wait().unwrap();
        let at_kill = count(&store, "SELECT COUNT(*) FROM messages").await;
        assert!(at_kill < N as i64, "{}: the kill came after the sync finished ({at_kill})", db.label());

        let _daemon = Daemon::start(dir.path(), db.url());
        // Mail arriving while the backfill resumes is stored too, without waiting for more
        // mail (whether the server announces it amid the FETCH responses or later).
        let late = format!("late-{}@y.example", db.label());
        dovecot.deliver(user, &message("x@y.example", user, "late", &late, "during the backfill"));
        wait_initial_sync(&store, account, 2).await;
        wait_for_message(&store, &late, SYNC_DEADLINE).await;
        let label = db.label();
        // Each round's late message stays in the shared mailbox.
        let total = (N + round + 1) as i64;
        assert_eq!(count(&store, "SELECT COUNT(*) FROM messages").await, total, "{label}");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM message_locations").await, total, "{label}");
        assert_eq!(count(&store, "SELECT COUNT(DISTINCT uid) FROM message_locations").await, total, "{label}");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM participants WHERE role = 'from'").await, total, "{label}");
    }
}

#[tokio::test]
async fn reconnects_after_dovecot_restart_and_survives_uidvalidity_change() {
    let user = "fay@example.com";
    let mut dovecot = Dovecot::start(&[(user, "pw-fay")]);
    let corpus: Vec<String> =
        (0..30).map(|i| message("x@y.example", user, &format!("m{i}"), &format!("v-{i}@y.example"), "x")).collect();
    dovecot.write_maildir(user, "", &corpus);
    let db = TestDb::postgres();
    let dir = tempfile::tempdir().unwrap();
    let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-fay");
    let daemon = Daemon::start(dir.path(), db.url());
    let store = db.store().await;
    wait_initial_sync(&store, account, 2).await;

    // Dovecot restarts while the worker idles; mail delivered meanwhile is picked up.
    dovecot.stop();
    dovecot.relaunch();
    dovecot.deliver(user, &message("x@y.example", user, "during restart", "restart-1@y.example", "x"));
    wait_for_message(&store, "restart-1@y.example", SYNC_DEADLINE).await;

    // A person's link on one message must survive the server renumbering everything.
    let linked: i64 = sqlx::query_scalar("SELECT id FROM messages WHERE message_id = 'v-7@y.example'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO message_links (message_id, entity_kind, entity_id, origin) VALUES ($1, 'contact', 42, 'manual')",
    )
    .bind(linked)
    .execute(store.pool())
    .await
    .unwrap();
    let inbox = store.folder(account, mailsync::store::FolderRole::Inbox).await.unwrap().unwrap();
    // Dovecot derives UIDVALIDITY from the clock in seconds: let a second pass so it differs.
    poll(Duration::from_secs(5), "a new second", || {
        (mailsync::store::now_ms() / 1000 > inbox.uidvalidity + 1).then_some(())
    });
    dovecot.stop();
    dovecot.reset_uidvalidity(user, "");
    dovecot.relaunch();
    dovecot.deliver(user, &message("x@y.example", user, "after renumbering", "renum-1@y.example", "x"));
    poll_async(SYNC_DEADLINE, "resync under the new UIDVALIDITY", || async {
        let f = store.folder(account, mailsync::store::FolderRole::Inbox).await.ok()??;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE message_id = 'renum-1@y.example'")
            .fetch_one(store.pool())
            .await
            .ok()?;
        (f.uidvalidity != inbox.uidvalidity && f.initial_sync_done && n == 1).then_some(())
    })
    .await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM messages").await, 32, "no duplicates\n{}", daemon.log());
    let still: i64 = sqlx::query_scalar("SELECT message_id FROM message_links WHERE entity_id = 42")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(still, linked, "the link stays on the same message");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM message_locations WHERE removed_at = 0").await, 32);
}

#[tokio::test]
async fn each_failure_is_classified_and_other_accounts_keep_syncing() {
    let dovecot = Dovecot::start(&[
        ("good@example.com", "pw-good"),
        ("wrong@example.com", "pw-right"),
        ("cert@example.com", "pw-cert"),
    ]);
    let plain = Dovecot::start_plaintext_only(&[("plain@example.com", "pw-plain")]);
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = db.url();
    let good = add_account(d, url, &dovecot, "good@example.com", "pw-good");
    let wrong = add_account(d, url, &dovecot, "wrong@example.com", "not-the-password");
    let add = |email: &str, port: u16, tls: &str, ca: bool| -> i64 {
        let mut cmd = mailsync(d, url);
        cmd.args(["account", "add", "--email", email, "--imap-host", "localhost", "--tls", tls, "--json"])
            .args(["--imap-port", &port.to_string(), "--password-env", "PW"])
            .env("PW", "pw");
        if ca {
            cmd.arg("--ca-file").arg(&certs().ca);
        }
        serde_json::from_str::<serde_json::Value>(&ok(&mut cmd)).unwrap()["id"].as_i64().unwrap()
    };
    let untrusted = add("cert@example.com", dovecot.imaps_port, "implicit", false);
    let closed = add("closed@example.com", free_port(), "implicit", true);
    let plaintext = add("plain@example.com", plain.imap_port, "starttls", true);

    let daemon = Daemon::start(d, url);
    let store = db.store().await;
    let expected = [
        (wrong, "auth_failed"),
        (untrusted, "certificate_invalid"),
        (closed, "host_or_port_wrong"),
        (plaintext, "tls_required"),
    ];
    for (id, class) in expected {
        let account = poll_async(SYNC_DEADLINE, class, || async {
            let a = store.account(id).await.ok()?;
            (a.error_class == class).then_some(a)
        })
        .await;
        assert_eq!(account.state, AccountState::Error);
        assert!(account.error_message.contains("fix:"), "{}", account.error_message);
        assert!(!account.error_message.contains("not-the-password") && !account.error_message.contains("pw-right"));
    }
    // The good account synced and still receives push mail.
    wait_initial_sync(&store, good, 2).await;
    dovecot.deliver(
        "good@example.com",
        &message("x@y.example", "good@example.com", "still here", "alive-1@y.example", "x"),
    );
    wait_for_message(&store, "alive-1@y.example", SYNC_DEADLINE).await;
    assert_eq!(daemon.api("GET", "/healthz", None).0, 200);
    let status: serde_json::Value = serde_json::from_str(&ok(mailsync(d, url).args(["status", "--json"]))).unwrap();
    let classes: Vec<&str> =
        status["accounts"].as_array().unwrap().iter().map(|a| a["error_class"].as_str().unwrap()).collect();
    assert_eq!(classes, vec!["", "auth_failed", "certificate_invalid", "host_or_port_wrong", "tls_required"]);
    assert!(!daemon.log().contains("pw-good"), "no password in the log");
    // `mailsync check` walks each account through the steps and names the failing one.
    let check = |id: i64| {
        let out = output(mailsync(d, url).args(["check", "--account", &id.to_string(), "--json"]));
        let report: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
        let failed: Vec<String> = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["ok"] == false)
            .map(|s| s["step"].as_str().unwrap().to_string())
            .collect();
        (out.code, failed, report)
    };
    let (code, failed, report) = check(good);
    assert_eq!((code, failed.len()), (0, 0), "{report}");
    assert!(report.to_string().contains("IDLE"), "{report}");
    for (id, step, fix) in [
        (wrong, "login", "password"),
        (untrusted, "tls", "ca-file"),
        (closed, "tcp", "port"),
        (plaintext, "tls", "TLS"),
    ] {
        let (code, failed, report) = check(id);
        assert_ne!(code, 0, "{report}");
        assert_eq!(failed, [step], "{report}");
        let failing = report["steps"].as_array().unwrap().iter().find(|s| s["ok"] == false).unwrap().clone();
        assert!(failing["fix"].as_str().unwrap().contains(fix), "{failing}");
    }

    let metrics = daemon.metrics();
    for class in ["auth_failed", "certificate_invalid", "host_or_port_wrong", "tls_required"] {
        let n = metric(&metrics, &format!("mailsync_imap_errors_total{{class=\"{class}\"}}")).unwrap_or(0.0);
        assert!(n >= 1.0, "{class}: {metrics}");
    }

    // The operator fixes the password: the worker restarts with it and syncs, without a
    // daemon restart.
    std::fs::write(d.join("right-pw"), "pw-right").unwrap();
    ok(mailsync(d, url).args(["account", "set-password", &wrong.to_string(), "--password-file", "right-pw"]));
    wait_initial_sync(&store, wrong, 2).await;
    poll_async(SYNC_DEADLINE, "the fixed account idle without error", || async {
        let a = store.account(wrong).await.ok()?;
        (a.error_class.is_empty() && a.state == AccountState::Idle).then_some(())
    })
    .await;
}

#[tokio::test]
async fn server_without_idle_is_polled_and_missing_sent_is_reported() {
    let user = "gus@example.com";
    // A capability list without IDLE, and no Sent folder at all.
    let dovecot = Dovecot::start_with(
        &[(user, "pw-gus")],
        "protocol imap {\n  imap_capability = IMAP4rev1 LITERAL+ SPECIAL-USE ID\n}\n\
         namespace inbox {\n  mailbox Sent {\n    auto = no\n    special_use =\n  }\n}\n",
    );
    dovecot.write_maildir(user, "", &[message("x@y.example", user, "first", "poll-0@y.example", "x")]);
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), db.url(), "poll_interval_secs = 1");
    let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-gus");
    let daemon = Daemon::start(dir.path(), db.url());
    let store = db.store().await;
    wait_initial_sync(&store, account, 1).await;
    let status: serde_json::Value =
        serde_json::from_str(&ok(mailsync(dir.path(), db.url()).args(["status", "--json"]))).unwrap();
    let a = &status["accounts"][0];
    assert_eq!(a["folders"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(a["folders"][0]["role"], "inbox");
    poll_async(SYNC_DEADLINE, "the no-Sent note", || async {
        let a = store.account(account).await.ok()?;
        a.note.contains("no Sent folder").then_some(())
    })
    .await;

    dovecot.deliver(user, &message("x@y.example", user, "polled", "poll-1@y.example", "x"));
    wait_for_message(&store, "poll-1@y.example", SYNC_DEADLINE).await;
    assert!(!dovecot.rawlog_commands().contains(" IDLE"), "IDLE was never sent\n{}", daemon.log());
    assert!(dovecot.rawlog_commands().contains(" NOOP"), "it polled");
}

#[tokio::test]
async fn expunged_messages_are_marked_removed_and_stay_in_the_crm() {
    let user = "hal@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-hal")]);
    let corpus: Vec<String> =
        (0..5).map(|i| message("x@y.example", user, &format!("m{i}"), &format!("gone-{i}@y.example"), "x")).collect();
    dovecot.write_maildir(user, "", &corpus);
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-hal");
    let _daemon = Daemon::start(dir.path(), db.url());
    let store = db.store().await;
    wait_initial_sync(&store, account, 2).await;

    // Another client deletes one message (here: its maildir file) while we idle.
    let cur = dovecot.dir.path().join("mail").join(user).join("cur");
    let victim = std::fs::read_dir(&cur)
        .unwrap()
        .flatten()
        .find(|e| std::fs::read_to_string(e.path()).unwrap_or_default().contains("gone-2@y.example"))
        .expect("the message file");
    std::fs::remove_file(victim.path()).unwrap();
    // Something new arrives too, so Dovecot notices the folder changed.
    dovecot.deliver(user, &message("x@y.example", user, "new", "gone-new@y.example", "x"));
    wait_for_message(&store, "gone-new@y.example", SYNC_DEADLINE).await;
    poll_async(SYNC_DEADLINE, "the expunged location marked removed", || async {
        let removed: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM message_locations l JOIN messages m ON m.id = l.message_id ",
            "WHERE m.message_id = 'gone-2@y.example' AND l.removed_at > 0"
        ))
        .fetch_one(store.pool())
        .await
        .ok()?;
        (removed == 1).then_some(())
    })
    .await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM messages").await, 6, "the message stays in the CRM");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM message_locations WHERE removed_at = 0").await, 5);
    let listed =
        ok(mailsync(dir.path(), db.url()).args(["messages", "list", "--account", &account.to_string(), "--json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let gone = listed.as_array().unwrap().iter().find(|m| m["message_id"] == "gone-2@y.example").unwrap();
    assert_eq!(gone["folders"], serde_json::json!([]), "no longer in any folder");
}

#[tokio::test]
async fn backfill_window_limits_the_first_sync_to_recent_mail() {
    let user = "ida@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-ida")]);
    let corpus: Vec<String> =
        (0..5).map(|i| message("x@y.example", user, &format!("m{i}"), &format!("window-{i}@y.example"), "x")).collect();
    dovecot.write_maildir(user, "", &corpus);
    // Two messages arrived long ago: a maildir file's mtime is its IMAP internal date.
    let cur = dovecot.dir.path().join("mail").join(user).join("cur");
    for entry in std::fs::read_dir(&cur).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if text.contains("window-0@") || text.contains("window-1@") {
            let status =
                std::process::Command::new("touch").args(["-d", "2020-01-01"]).arg(entry.path()).status().unwrap();
            assert!(status.success());
        }
    }
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), db.url(), "backfill_days = 30");
    let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-ida");
    let _daemon = Daemon::start(dir.path(), db.url());
    let store = db.store().await;
    wait_initial_sync(&store, account, 2).await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM messages").await, 3, "only the last 30 days");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM messages WHERE message_id IN ('window-0@y.example', 'window-1@y.example')")
            .await,
        0
    );
    // New mail still arrives.
    dovecot.deliver(user, &message("x@y.example", user, "new", "window-new@y.example", "x"));
    wait_for_message(&store, "window-new@y.example", SYNC_DEADLINE).await;
}
