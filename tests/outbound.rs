//! Outbound mail through a real Postfix relaying into Dovecot, and through smtp-sink's
//! fault modes: delivery, Sent copy, linking and threading, retries, crash safety.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const SEND_DEADLINE: Duration = Duration::from_secs(30);

/// Relay settings for the daemon's config (through `write_config`'s extra text).
fn relay_config(port: u16, outbound: &str) -> String {
    format!(
        "\n[smtp_relay]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         [outbound]\nretry_base_secs = 1\nretry_max_secs = 1\npoll_ms = 100\nsend_timeout_secs = 10\n\
         stale_sending_secs = 11\n{outbound}\n"
    )
}

/// An account for `user` whose IMAP server is never reached (sending needs only the user).
fn offline_account(dir: &std::path::Path, db_url: &str, user: &str) {
    std::fs::write(dir.join("pw"), "pw").unwrap();
    ok(mailsync(dir, db_url)
        .args(["account", "add", "--email", user, "--imap-host", "127.0.0.1", "--tls", "starttls"])
        .args(["--imap-port", &free_port().to_string(), "--password-file", "pw"]));
}

#[tokio::test]
async fn sent_mail_is_delivered_filed_linked_and_joins_the_reply_thread() {
    let (kim, ann) = ("kim@acme.example", "ann@client.example");
    for db in TestDb::both() {
        let dovecot = Dovecot::start(&[(kim, "pw-kim"), (ann, "pw-ann")]);
        let postfix = Postfix::start(&[("client.example", dovecot.lmtp_port)]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_config(d, db.url(), &relay_config(postfix.smtp_port, ""));
        let account = add_account(d, db.url(), &dovecot, kim, "pw-kim");
        let daemon = Daemon::start(d, db.url());
        let store = db.store().await;
        wait_initial_sync(&store, account, 2).await;
        let tag = db.label();
        let (_, contact) = daemon.api("POST", "/v1/contacts", Some(&json!({"name": "Ann", "emails": [ann]})));
        let (_, deal) =
            daemon.api("POST", "/v1/deals", Some(&json!({"title": "Renewal", "contacts": [contact["id"]]})));

        let (status, queued) = daemon.api(
            "POST",
            "/v1/messages/send",
            Some(&json!({"user": kim, "to": [format!("Ann <{ann}>")], "subject": "Offer", "text": "Hello Ann", "deal": deal["id"]})),
        );
        assert_eq!(status, 202, "{tag}: {queued}");
        let sent = wait_outbox_final(&daemon, queued["id"].as_i64().unwrap(), SEND_DEADLINE);
        assert_eq!(sent["status"], "sent", "{tag}: {sent}\n{}", postfix.log());
        let message_id = sent["message_id"].as_str().unwrap().to_string();
        assert_eq!(message_id, queued["message_id"], "the Message-ID is fixed at enqueue");

        // Delivered to Ann's mailbox by Postfix; filed once in Kim's Sent folder.
        poll(SEND_DEADLINE, "delivery to ann's INBOX", || (dovecot.maildir_count(ann, "") == 1).then_some(()));
        poll(SEND_DEADLINE, "the copy in kim's Sent", || (dovecot.maildir_count(kim, ".Sent") == 1).then_some(()));
        let entry = poll(SEND_DEADLINE, "sent copy recorded", || {
            let (_, e) = daemon.api("GET", &format!("/v1/outbox/{}", queued["id"]), None);
            (e["sent_copy"] == "appended").then_some(e)
        });
        let stored = entry["stored_message"].as_i64().unwrap();
        // The Sent folder's sync finds the copy and recognizes it: still one message.
        wait_in_sent_folder(&store, stored).await;
        let copies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE message_id = $1")
            .bind(&message_id)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(copies, 1, "{tag}");
        let by_deal = |daemon: &Daemon| -> Vec<String> {
            let (_, list) = daemon.api("GET", &format!("/v1/messages?deal={}", deal["id"]), None);
            list.as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(by_deal(&daemon), std::slice::from_ref(&message_id), "{tag}: linked to the deal");
        let (_, by_contact) = daemon.api("GET", &format!("/v1/messages?contact={}", contact["id"]), None);
        assert_eq!(by_contact[0]["message_id"], message_id, "{tag}: linked to the recipient's contact");

        // Ann's reply, synced over IMAP, joins the thread and the deal.
        let reply_id = format!("reply-{tag}@client.example");
        dovecot.deliver(
            kim,
            &format!(
                "From: {ann}\r\nTo: {kim}\r\nSubject: Re: Offer\r\nMessage-ID: <{reply_id}>\r\nIn-Reply-To: <{message_id}>\r\n\
                 References: <{message_id}>\r\nDate: Sat, 21 Nov 2026 11:00:00 +0000\r\n\r\nYes!\r\n"
            ),
        );
        wait_for_message(&store, &reply_id, SYNC_DEADLINE).await;
        let mut linked = by_deal(&daemon);
        linked.sort();
        let mut expected = vec![message_id.clone(), reply_id.clone()];
        expected.sort();
        assert_eq!(linked, expected, "{tag}: the reply joined the deal through its thread");

        // Refused at enqueue with a clear error: header injection, bad address, no user.
        for bad in [
            json!({"user": kim, "to": [ann], "subject": "Hi\r\nBcc: victim@evil.example", "text": "x"}),
            json!({"user": kim, "to": [format!("{ann}\r\nBcc: victim@evil.example")], "text": "x"}),
            json!({"user": kim, "to": ["not-an-address"], "text": "x"}),
            json!({"user": "nobody@acme.example", "to": [ann], "text": "x"}),
        ] {
            let (status, err) = daemon.api("POST", "/v1/messages/send", Some(&bad));
            assert!(status == 422 || status == 404, "{tag}: {bad} -> {status} {err}");
            assert!(err["error"]["message"].is_string(), "{err}");
        }
    }
}

/// The IMAP server is down when a sent message's copy is due: the copy stays pending,
/// is tried again on the retry schedule, and is filed once the server is back.
#[tokio::test]
async fn a_sent_copy_that_cannot_be_filed_is_retried_until_the_server_is_back() {
    let (kim, ann) = ("kim@acme.example", "ann@client.example");
    for db in TestDb::both() {
        let mut dovecot = Dovecot::start(&[(kim, "pw-kim")]);
        let sink = SmtpSink::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_config(d, db.url(), &relay_config(sink.port, ""));
        let account = add_account(d, db.url(), &dovecot, kim, "pw-kim");
        let daemon = Daemon::start(d, db.url());
        let store = db.store().await;
        wait_initial_sync(&store, account, 2).await;
        let tag = db.label();
        dovecot.stop();

        let (status, queued) = daemon.api(
            "POST",
            "/v1/messages/send",
            Some(&json!({"user": kim, "to": [ann], "subject": "Offer", "text": "Hi"})),
        );
        assert_eq!(status, 202, "{tag}: {queued}");
        let id = queued["id"].as_i64().unwrap();
        let sent = wait_outbox_final(&daemon, id, SEND_DEADLINE);
        assert_eq!(sent["status"], "sent", "{tag}: {sent}");
        let failed_attempts = || async {
            sqlx::query_scalar::<_, i64>("SELECT sent_copy_attempts FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        poll_async(SEND_DEADLINE, "a failed attempt to file the copy", || async {
            (failed_attempts().await >= 2).then_some(())
        })
        .await;
        let (_, entry) = daemon.api("GET", &format!("/v1/outbox/{id}"), None);
        assert_eq!(entry["sent_copy"], "pending", "{tag}: still to be filed: {entry}");

        dovecot.relaunch();
        poll(SEND_DEADLINE, "the copy recorded as filed", || {
            let (_, e) = daemon.api("GET", &format!("/v1/outbox/{id}"), None);
            (e["sent_copy"] == "appended").then_some(())
        });
        assert_eq!(dovecot.maildir_count(kim, ".Sent"), 1, "{tag}: filed once");
    }
}

#[tokio::test]
async fn relay_down_then_up_and_a_daemon_crash_deliver_each_message_once() {
    let db = TestDb::postgres();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    write_config(d, db.url(), &relay_config(port, "daily_limit_per_user = 4"));
    offline_account(d, db.url(), "kim@acme.example");
    let mut daemon = Daemon::start(d, db.url());
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, q) = daemon.api(
            "POST",
            "/v1/messages/send",
            Some(&json!({"user": "kim@acme.example", "to": ["ann@client.example"], "subject": format!("m{i}"), "text": "x"})),
        );
        assert_eq!(status, 202, "{q}");
        ids.push(q["id"].as_i64().unwrap());
    }
    // The relay is down: attempts are made and deferred, nothing fails.
    poll(SEND_DEADLINE, "deferred attempts", || {
        ids.iter()
            .all(|id| {
                let (_, e) = daemon.api("GET", &format!("/v1/outbox/{id}"), None);
                e["status"] == "queued" && e["attempts"].as_i64().unwrap_or(0) >= 1
            })
            .then_some(())
    });
    // The quota counts queued mail: the fifth message of the day is refused with a reason.
    let (_, fourth) = daemon.api(
        "POST",
        "/v1/messages/send",
        Some(&json!({"user": "kim@acme.example", "to": ["a@b.example"], "text": "x"})),
    );
    let (status, err) = daemon.api(
        "POST",
        "/v1/messages/send",
        Some(&json!({"user": "kim@acme.example", "to": ["a@b.example"], "text": "x"})),
    );
    assert_eq!(status, 429, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("daily_limit_per_user"), "{err}");
    ids.push(fourth["id"].as_i64().unwrap());

    // The daemon dies; the relay comes back; a new daemon delivers everything once.
    kill(&mut daemon.child);
    let sink = SmtpSink::start_on(port, &["-d", "mail/%H%M%S."]);
    let daemon = Daemon::start(d, db.url());
    for id in &ids {
        assert_eq!(wait_outbox_final(&daemon, *id, SEND_DEADLINE)["status"], "sent");
    }
    let dumped = sink.dumped();
    assert_eq!(dumped.len(), 4, "each message exactly once");
    for i in 0..3 {
        assert_eq!(
            dumped.iter().filter(|m| m.lines().any(|l| l.trim_end() == format!("Subject: m{i}"))).count(),
            1,
            "m{i}"
        );
    }
}

#[tokio::test]
async fn relay_faults_are_retried_or_failed_with_the_servers_reply() {
    let db = TestDb::sqlite();
    // (smtp-sink fault options, attempts expected, a fragment of the recorded reply)
    let cases: [(&[&str], i64, &str); 6] = [
        (&["-Q", "CONNECT"], 2, "421"),
        (&["-r", "RCPT"], 2, "4"),
        (&["-f", "RCPT"], 1, "5"),
        (&["-r", "."], 2, "4"),
        (&["-f", "."], 1, "5"),
        (&["-q", "DATA"], 2, ""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, db.url(), "");
    offline_account(d, db.url(), "kim@acme.example");
    for (args, attempts, reply) in cases {
        let sink = SmtpSink::start(args);
        write_config(d, db.url(), &relay_config(sink.port, "max_attempts = 2"));
        let daemon = Daemon::start(d, db.url());
        let (status, q) = daemon.api(
            "POST",
            "/v1/messages/send",
            Some(&json!({"user": "kim@acme.example", "to": ["ann@client.example", "bo@client.example"], "text": "x"})),
        );
        assert_eq!(status, 202, "{args:?}: {q}");
        let entry = wait_outbox_final(&daemon, q["id"].as_i64().unwrap(), SEND_DEADLINE);
        assert_eq!(entry["status"], "failed", "{args:?}: {entry}");
        assert_eq!(entry["attempts"], attempts, "{args:?}: {entry}");
        assert!(entry["last_reply"].as_str().unwrap().contains(reply), "{args:?}: {entry}");
        for r in entry["recipients"].as_array().unwrap() {
            assert_eq!(r["state"], "refused", "{args:?}: every recipient has an outcome: {entry}");
            assert!(!r["reply"].as_str().unwrap().is_empty(), "{args:?}: {entry}");
        }
    }
}
