//! Linking against a real Dovecot, on SQLite and PostgreSQL: threads, matching by
//! address, links and sticky unlinks by people, retroactive linking, organization rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn count(store: &mailsync::store::Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(store.pool()).await.unwrap()
}

/// A reply message with threading headers.
fn reply(id: &str, in_reply_to: &str, references: &[&str], to: &str) -> String {
    format!(
        "From: x@y.example\r\nTo: {to}\r\nSubject: Re: chain\r\nMessage-ID: <{id}>\r\nIn-Reply-To: <{in_reply_to}>\r\n\
         References: {}\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n",
        references.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(" ")
    )
}

#[tokio::test]
async fn reply_chains_delivered_out_of_order_end_in_one_thread() {
    let user = "joe@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-joe")]);
    dovecot.write_maildir(user, "", &[message("x@y.example", user, "unrelated", "lone@y.example", "x")]);
    for db in TestDb::both() {
        let dir = tempfile::tempdir().unwrap();
        let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-joe");
        let daemon = Daemon::start(dir.path(), db.url());
        let store = db.store().await;
        wait_initial_sync(&store, account, 2).await;
        let tag = db.label();
        let id = |n: &str| format!("{n}-{tag}@chain.example");
        let (a, b, c, d) = (id("a"), id("b"), id("c"), id("d"));
        // Two partial chains first: D replies to C (C unseen), B replies to A (A unseen).
        dovecot.deliver(user, &reply(&d, &c, &[&c], user));
        dovecot.deliver(user, &reply(&b, &a, &[&a], user));
        wait_for_message(&store, &b, SYNC_DEADLINE).await;
        wait_for_message(&store, &d, SYNC_DEADLINE).await;
        let apart: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT thread_id) FROM messages WHERE message_id IN ($1, $2)")
                .bind(&b)
                .bind(&d)
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(apart, 2, "{tag}: two partial threads before the link arrives");
        // C arrives only with In-Reply-To B: it links the two partial chains into one.
        dovecot.deliver(user, &reply(&c, &b, &[], user));
        // The root arrives last.
        dovecot.deliver(user, &message("x@y.example", user, "chain", &a, "root"));
        wait_for_message(&store, &a, SYNC_DEADLINE).await;
        wait_for_message(&store, &c, SYNC_DEADLINE).await;
        let threads: Vec<Option<i64>> = sqlx::query_scalar(
            "SELECT thread_id FROM messages WHERE message_id IN ($1, $2, $3, $4) ORDER BY message_id",
        )
        .bind(&a)
        .bind(&b)
        .bind(&c)
        .bind(&d)
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(threads.len(), 4, "{tag}");
        assert!(
            threads[0].is_some() && threads.iter().all(|t| *t == threads[0]),
            "{tag}: {threads:?}\n{}",
            daemon.log()
        );
        let lone: Option<i64> =
            sqlx::query_scalar("SELECT thread_id FROM messages WHERE message_id = 'lone@y.example'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(lone.is_some() && lone != threads[0], "{tag}: an unrelated message has its own thread");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM messages WHERE thread_id IS NULL").await, 0);
    }
}

/// `(message_id, kind:entity_id:origin)` of every active link, sorted.
async fn links(store: &mailsync::store::Store) -> Vec<(String, String)> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(concat!(
        "SELECT m.message_id, l.entity_kind, l.entity_id, l.origin FROM message_links l ",
        "JOIN messages m ON m.id = l.message_id WHERE l.state = 'active' ORDER BY m.message_id, l.entity_kind, l.entity_id"
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(m, k, id, o)| (m, format!("{k}:{id}:{o}"))).collect()
}

#[tokio::test]
async fn messages_link_to_exactly_the_records_whose_addresses_they_carry() {
    let owner = "kim@acme.example";
    let with_bcc = |from: &str, to: &str, cc: &str, bcc: &str, id: &str| {
        format!(
            "From: {from}\r\nTo: {to}\r\nCc: {cc}\r\nBcc: {bcc}\r\nSubject: s\r\nMessage-ID: <{id}>\r\n\
             Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n"
        )
    };
    let fill = |dovecot: &Dovecot| {
        dovecot.write_maildir(
            owner,
            "",
            &[
                message("ann@client.example", owner, "from ann", "m1@x.example", "x"),
                with_bcc("someone@else.example", owner, "lee@prospect.example", "nobody@else.example", "m2@x.example"),
                with_bcc("someone@else.example", owner, "nobody@else.example", "bo@client.example", "m3@x.example"),
            ],
        );
        dovecot.write_maildir(
            owner,
            ".Sent",
            &[with_bcc(owner, "ann@client.example", "nobody@else.example", "bo@client.example", "s1@x.example")],
        );
    };
    for db in TestDb::both() {
        // A mailbox per backend: replies delivered in one pass must not reach the next.
        let mut dovecot = Dovecot::start(&[(owner, "pw-kim")]);
        fill(&dovecot);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ms = || mailsync(d, db.url());
        let id_of = |out: String| serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_i64().unwrap();
        std::fs::write(d.join("pw"), "pw-kim").unwrap();
        let account = id_of(ok(ms()
            .args(["account", "add", "--org", "acme", "--email", owner, "--imap-host", "localhost", "--json"])
            .args(["--imap-port", &dovecot.imaps_port.to_string(), "--password-file", "pw"])
            .arg("--ca-file")
            .arg(&certs().ca)));
        let ann = id_of(ok(ms().args(["contact", "add", "--org", "acme", "--email", "ann@client.example", "--json"])));
        let bo = id_of(ok(ms().args(["contact", "add", "--org", "acme", "--email", "bo@client.example", "--json"])));
        let lee = id_of(ok(ms().args(["lead", "add", "--org", "acme", "--email", "lee@prospect.example", "--json"])));
        ok(ms().args(["contact", "add", "--org", "acme", "--name", "Kim herself", "--email", owner]));
        ok(ms().args(["contact", "add", "--org", "other", "--email", "ann@client.example"]));
        let deal = id_of(ok(ms().args(["deal", "add", "--org", "acme", "--title", "D", "--json"])));

        let _daemon = Daemon::start(d, db.url());
        let store = db.store().await;
        wait_initial_sync(&store, account, 2).await;
        let tag = db.label();
        let expected = vec![
            ("m1@x.example".to_string(), format!("contact:{ann}:address")),
            ("m2@x.example".to_string(), format!("lead:{lee}:address")),
            ("s1@x.example".to_string(), format!("contact:{ann}:address")),
            ("s1@x.example".to_string(), format!("contact:{bo}:address")),
        ];
        assert_eq!(links(&store).await, expected, "{tag}: exact links, no other org, no owner, Bcc only when sent");

        // A person links m1 to the deal (its thread follows) and unlinks m2 from the lead.
        let message_id = |m: &str| {
            let store = store.clone();
            let m = m.to_string();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT id FROM messages WHERE message_id = $1")
                    .bind(m)
                    .fetch_one(store.pool())
                    .await
                    .unwrap()
            }
        };
        let (m1, m2) = (message_id("m1@x.example").await, message_id("m2@x.example").await);
        ok(ms().args(["link", "--message", &m1.to_string(), "--deal", &deal.to_string()]));
        ok(ms().args(["unlink", "--message", &m2.to_string(), "--lead", &lee.to_string()]));
        let r1 = format!("r1-{tag}@x.example");
        let r2 = format!("r2-{tag}@x.example");
        dovecot.deliver(owner, &reply(&r1, "m1@x.example", &["m1@x.example"], owner));
        dovecot.deliver(owner, &reply(&r2, "m2@x.example", &["m2@x.example"], "lee@prospect.example"));
        wait_for_message(&store, &r1, SYNC_DEADLINE).await;
        wait_for_message(&store, &r2, SYNC_DEADLINE).await;
        let check = |all: Vec<(String, String)>, when: &str| {
            assert!(all.contains(&("m1@x.example".into(), format!("deal:{deal}:manual"))), "{tag} {when}: {all:?}");
            assert!(
                all.contains(&(r1.clone(), format!("deal:{deal}:thread"))),
                "{tag} {when}: the deal collects the reply: {all:?}"
            );
            assert!(
                !all.iter().any(|(m, _)| *m == r2 || m == "m2@x.example"),
                "{tag} {when}: unlinked stays unlinked: {all:?}"
            );
        };
        check(links(&store).await, "after the replies");

        // The listings show each link with its origin and state.
        let listed: serde_json::Value =
            serde_json::from_str(&ok(ms().args(["messages", "list", "--deal", &deal.to_string(), "--json"]))).unwrap();
        let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 2, "{tag}: {listed}");
        assert!(ids.contains(&"m1@x.example") && ids.contains(&r1.as_str()), "{tag}: {listed}");
        let thread = listed[0]["thread_id"].as_i64().unwrap();
        let shown: serde_json::Value =
            serde_json::from_str(&ok(ms().args(["threads", "show", &thread.to_string(), "--json"]))).unwrap();
        assert_eq!(shown["links"][0]["origin"], "manual", "{tag}: {shown}");
        assert_eq!(shown["links"][0]["state"], "active", "{tag}: {shown}");
        let m2_thread = sqlx::query_scalar::<_, i64>("SELECT thread_id FROM messages WHERE id = $1")
            .bind(m2)
            .fetch_one(store.pool())
            .await
            .unwrap();
        let shown: serde_json::Value =
            serde_json::from_str(&ok(ms().args(["threads", "show", &m2_thread.to_string(), "--json"]))).unwrap();
        assert_eq!(shown["links"][0]["state"], "dissociated", "{tag}: {shown}");
        let m2_links = &shown["messages"][0]["links"][0];
        assert_eq!(
            (&m2_links["origin"], &m2_links["state"]),
            (&"manual".into(), &"dissociated".into()),
            "{tag}: {shown}"
        );

        // A retroactive match (a new address for the lead, carried by r2) does not re-link.
        ok(ms().args(["lead", "add-email", &lee.to_string(), "x@y.example"]));
        poll_async(SYNC_DEADLINE, "relink queue drained", || async {
            (store.pending_relink_jobs().await.ok()? == 0).then_some(())
        })
        .await;
        check(links(&store).await, "after a retroactive match");

        // A full resync (the server renumbers every message) changes nothing.
        let inbox = store.folder(account, mailsync::store::FolderRole::Inbox).await.unwrap().unwrap();
        poll(Duration::from_secs(5), "a new second", || {
            (mailsync::store::now_ms() / 1000 > inbox.uidvalidity + 1).then_some(())
        });
        dovecot.stop();
        dovecot.reset_uidvalidity(owner, "");
        dovecot.relaunch();
        poll_async(SYNC_DEADLINE, "resync under the new UIDVALIDITY", || async {
            let f = store.folder(account, mailsync::store::FolderRole::Inbox).await.ok()??;
            (f.uidvalidity != inbox.uidvalidity && f.initial_sync_done).then_some(())
        })
        .await;
        check(links(&store).await, "after a full resync");
        // The unlinked chain's next reply stays unlinked after the resync too.
        let r3 = format!("r3-{tag}@x.example");
        dovecot.deliver(owner, &reply(&r3, &r2, &["m2@x.example", &r2], "lee@prospect.example"));
        wait_for_message(&store, &r3, SYNC_DEADLINE).await;
        let all = links(&store).await;
        assert!(!all.iter().any(|(m, _)| *m == r3), "{tag}: {all:?}");
    }
}

/// Active links of one record as `message_id`s, sorted, through the API.
fn linked_via_api(daemon: &Daemon, kind: &str, id: i64) -> Vec<String> {
    let (status, list) = daemon.api("GET", &format!("/v1/messages?{kind}={id}"), None);
    assert_eq!(status, 200, "{list}");
    let mut ids: Vec<String> =
        list.as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn records_created_later_link_past_mail_within_seconds() {
    let owner = "kim@acme.example";
    for db in TestDb::both() {
        let dovecot = Dovecot::start(&[(owner, "pw-kim")]);
        dovecot.write_maildir(
            owner,
            "",
            &[
                message("ann@client.example", owner, "hello", "a1@x.example", "x"),
                message("ann+news@client.example", owner, "newsletter", "a2@x.example", "x"),
                message("Jörg <jörg@bücher.example>", owner, "idn", "j1@x.example", "x"),
                message("stranger@else.example", owner, "cold mail", "c1@x.example", "x"),
            ],
        );
        dovecot.write_maildir(
            owner,
            ".Sent",
            &[message(owner, "newbie@prospect.example, pat@acme.example", "offer", "s1@x.example", "x")],
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ms = || mailsync(d, db.url());
        // Leads for recipients of sent mail, never for the organization's own domain.
        ok(ms().args([
            "org",
            "set",
            "default",
            "--auto-create",
            "sent-recipients",
            "--internal-domain",
            "ACME.example",
        ]));
        let account = add_account(d, db.url(), &dovecot, owner, "pw-kim");
        let daemon = Daemon::start(d, db.url());
        let store = db.store().await;
        wait_initial_sync(&store, account, 2).await;
        let tag = db.label();

        let (_, leads) = daemon.api("GET", "/v1/leads", None);
        let leads = leads.as_array().unwrap();
        assert_eq!(leads.len(), 1, "{tag}: one auto-created lead: {leads:?}");
        assert_eq!((&leads[0]["emails"][0], &leads[0]["source"]), (&json!("newbie@prospect.example"), &json!("auto")));
        assert_eq!(linked_via_api(&daemon, "lead", leads[0]["id"].as_i64().unwrap()), ["s1@x.example"], "{tag}");

        // A contact created after its mail was synced: linked within seconds, in the background.
        let (status, ann) =
            daemon.api("POST", "/v1/contacts", Some(&json!({"name": "Ann", "emails": ["Ann@Client.example"]})));
        assert_eq!(status, 201, "{ann}");
        let ann = ann["id"].as_i64().unwrap();
        poll(Duration::from_secs(5), "past mail linked to the new contact", || {
            (linked_via_api(&daemon, "contact", ann) == ["a1@x.example"]).then_some(())
        });
        // An internationalized domain, written by the user in its Unicode or ASCII form.
        let (status, jorg) =
            daemon.api("POST", "/v1/contacts", Some(&json!({"emails": ["jörg@xn--bcher-kva.example"]})));
        assert_eq!(status, 201, "{jorg}");
        poll(Duration::from_secs(5), "IDN address linked", || {
            (linked_via_api(&daemon, "contact", jorg["id"].as_i64().unwrap()) == ["j1@x.example"]).then_some(())
        });
        // +tags are distinct addresses until the organization says otherwise.
        let (status, settings) = daemon.api(
            "PUT",
            "/v1/orgs/default/settings",
            Some(&json!({"ignore_plus_tags": true, "auto_create": "sent_recipients", "internal_domains": ["acme.example"]})),
        );
        assert_eq!(status, 200, "{settings}");
        poll(Duration::from_secs(5), "+tag address linked under the new rule", || {
            (linked_via_api(&daemon, "contact", ann) == ["a1@x.example", "a2@x.example"]).then_some(())
        });
        // A second address on an existing record links its past mail too.
        let (status, _) =
            daemon.api("POST", &format!("/v1/contacts/{ann}/emails"), Some(&json!({"email": "stranger@else.example"})));
        assert_eq!(status, 200);
        poll(Duration::from_secs(5), "mail of the added address linked", || {
            (linked_via_api(&daemon, "contact", ann) == ["a1@x.example", "a2@x.example", "c1@x.example"]).then_some(())
        });
        // Link and unlink through the API, with clear errors for bad requests.
        let (status, err) = daemon.api("POST", "/v1/links", Some(&json!({"message": 1, "thread": 1, "contact": ann})));
        assert_eq!(status, 422, "{tag}: {err}");
        let (status, err) = daemon.api("POST", "/v1/unlinks", Some(&json!({"message": 999999, "contact": ann})));
        assert_eq!(status, 404, "{tag}: {err}");
        let c1: i64 = sqlx::query_scalar("SELECT id FROM messages WHERE message_id = 'c1@x.example'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let (status, change) = daemon.api("POST", "/v1/unlinks", Some(&json!({"message": c1, "contact": ann})));
        assert_eq!((status, &change["messages"]), (200, &json!(1)), "{tag}: {change}");
        assert_eq!(linked_via_api(&daemon, "contact", ann), ["a1@x.example", "a2@x.example"], "{tag}");
        // The same address on a contact of another organization: no leakage.
        let (status, other) =
            daemon.api("POST", "/v1/contacts", Some(&json!({"org": "other", "emails": ["ann@client.example"]})));
        assert_eq!(status, 201);
        let (status, err) = daemon.api("POST", "/v1/links", Some(&json!({"message": c1, "contact": other["id"]})));
        assert_eq!(status, 422, "{tag}: cross-organization link refused: {err}");
        poll_async(SYNC_DEADLINE, "relink queue drained", || async {
            (store.pending_relink_jobs().await.ok()? == 0).then_some(())
        })
        .await;
        assert!(linked_via_api(&daemon, "contact", other["id"].as_i64().unwrap()).is_empty(), "{tag}");
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM leads").await,
            1,
            "{tag}: no lead for the internal pat@acme.example"
        );
    }
}

/// PostgreSQL's planner needs current statistics while an initial sync grows the tables
/// (with a near-empty table's statistics it hashed whole tables per batch). The daemon
/// analyzes the ingest tables itself; autovacuum's runs are recorded separately
/// (`last_autoanalyze`), so `last_analyze` shows the daemon's.
#[tokio::test]
async fn a_bulk_sync_on_postgres_refreshes_the_planner_statistics() {
    let user = "bulk@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-bulk")]);
    let mail: Vec<String> =
        (0..1_200).map(|i| message("x@y.example", user, "bulk", &format!("bulk-{i}@y.example"), "x")).collect();
    dovecot.write_maildir(user, "", &mail);
    let db = TestDb::postgres();
    let dir = tempfile::tempdir().unwrap();
    let account = add_account(dir.path(), db.url(), &dovecot, user, "pw-bulk");
    let _daemon = Daemon::start(dir.path(), db.url());
    let store = db.store().await;
    wait_initial_sync(&store, account, 2).await;
    let analyzed = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'messages'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    // PostgreSQL publishes its change counters about a second late, so the last batch of
    // the initial sync may not have seen them: each later message is another chance.
    let mut next = 0;
    poll_async(Duration::from_secs(60), "statistics of messages refreshed", || {
        next += 1;
        let id = format!("late-{next}@y.example");
        dovecot.deliver(user, &message("x@y.example", user, "late", &id, "x"));
        let store = &store;
        async move {
            wait_for_message(store, &id, SYNC_DEADLINE).await;
            analyzed().await.then_some(())
        }
    })
    .await;
}
