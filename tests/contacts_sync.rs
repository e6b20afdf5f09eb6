//! Contacts sync against real CardDAV servers (Radicale and Xandikos): first sync both
//! ways, edits on each side and on both, each conflict policy, deletions on each side, a
//! crash between a remote write and its commit, a refused sync token, a duplicate UID, a
//! remote that suddenly lists nothing, and a configuration removed and set again. After
//! every step a second sync must change nothing on either side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use mailsync::contacts::carddav::CardDav;
use serde_json::Value;

const USER: &str = "alice@example.test";

struct Server {
    name: &'static str,
    url: String,
    /// Folder of the `CRM` address book in the server's own storage, where it has one.
    storage: Option<std::path::PathBuf>,
    _radicale: Option<Radicale>,
    _xandikos: Option<Xandikos>,
}

fn servers() -> Vec<Server> {
    let radicale = Radicale::start();
    let xandikos = Xandikos::start();
    vec![
        Server {
            name: "radicale",
            url: format!("http://127.0.0.1:{}/", radicale.port),
            storage: Some(radicale.dir.path().join("collections/collection-root/alice/crm")),
            _radicale: Some(radicale),
            _xandikos: None,
        },
        Server {
            name: "xandikos",
            url: format!("http://127.0.0.1:{}/", xandikos.port),
            storage: None,
            _radicale: None,
            _xandikos: Some(xandikos),
        },
    ]
}

/// A fresh SQLite store and directory (with its config) for one server's run.
struct Scratch {
    db: TestDb,
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let (db, dir) = (TestDb::sqlite(), tempfile::tempdir().unwrap());
        write_config(dir.path(), db.url(), "");
        Scratch { db, dir }
    }

    /// The rig on `server`, with the syncing user [`USER`] added.
    fn rig<'a>(&'a self, server: &'a Server) -> Rig<'a> {
        let rig = Rig { dir: self.dir.path(), db: &self.db, server };
        rig.add_user(USER);
        rig
    }
}

struct Rig<'a> {
    dir: &'a Path,
    db: &'a TestDb,
    server: &'a Server,
}

impl Rig<'_> {
    fn cli(&self, args: &[&str]) -> String {
        ok(mailsync(self.dir, self.db.url()).args(args).env("DAV_PASSWORD", "pw"))
    }

    /// A user with a mail account (its server is never reached by these tests).
    fn add_user(&self, email: &str) {
        std::fs::write(self.dir.join("pw"), "pw").unwrap();
        let args = ["account", "add", "--email", email, "--imap-host", "127.0.0.1", "--tls", "starttls"];
        self.cli(&[&args[..], &["--imap-port", "1", "--password-file", "pw"]].concat());
    }

    fn configure(&self, extra: &[&str]) {
        let mut args = vec!["contacts", "configure", "--user", USER, "--url", &self.server.url, "--username", "alice"];
        args.extend(["--password-env", "DAV_PASSWORD", "--address-book", "CRM"]);
        args.extend(extra);
        self.cli(&args);
    }

    /// Runs a sync; returns its report.
    fn sync(&self) -> Value {
        serde_json::from_str(&self.cli(&["contacts", "sync", "--user", USER, "--json"])).expect("report")
    }

    /// A sync that must change nothing anywhere.
    fn sync_quiet(&self, step: &str) {
        let report = self.sync();
        for key in
            ["created_in_crm", "created_remotely", "updated_in_crm", "updated_remotely", "flagged", "remote_deletions"]
        {
            assert_eq!(report[key], 0, "{}: {step}: a second sync did something: {report}", self.server.name);
        }
    }

    fn contacts(&self) -> Vec<Value> {
        let out = self.cli(&["contact", "list", "--json"]);
        serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
    }

    fn contact_named(&self, name: &str) -> Value {
        let all = self.contacts();
        let found: Vec<&Value> = all.iter().filter(|c| c["name"] == name).collect();
        assert_eq!(found.len(), 1, "{}: one CRM contact {name}: {all:?}", self.server.name);
        found[0].clone()
    }
}

/// The remote side, as another client (a phone) sees it.
async fn book(server: &Server) -> CardDav {
    CardDav::connect(&server.url, "alice", "pw", "CRM", Duration::from_secs(20)).await.expect("connect")
}

/// Every card: (href, etag, text).
async fn cards(dav: &CardDav) -> Vec<(String, String, String)> {
    let listing = dav.changes("").await.expect("listing");
    let hrefs: Vec<String> = listing.changed.iter().map(|(h, _)| h.clone()).collect();
    let mut cards: Vec<_> =
        dav.fetch(&hrefs).await.expect("fetch").into_iter().map(|f| (f.href, f.etag, f.text)).collect();
    cards.sort();
    cards
}

async fn card_with(dav: &CardDav, needle: &str) -> (String, String, String) {
    let all = cards(dav).await;
    let found: Vec<_> = all.iter().filter(|c| c.2.contains(needle)).cloned().collect();
    assert_eq!(found.len(), 1, "one card with {needle}: {all:#?}");
    found[0].clone()
}

fn vcard(uid: &str, name: &str, email: &str, extra: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nN:{name};;;;\r\nEMAIL:{email}\r\n{extra}END:VCARD\r\n"
    )
}

#[tokio::test]
async fn two_way_sync_with_radicale_and_xandikos() {
    // As `main` does: one crypto provider for every TLS user (reqwest here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    for server in servers() {
        let scratch = Scratch::new();
        let rig = scratch.rig(&server);
        let tag = server.name;

        // First sync both ways: Ann (CRM) goes out, Bob (remote, with a note and a photo
        // URL the CRM does not map) comes in.
        rig.cli(&[
            "contact",
            "add",
            "--name",
            "Ann Lee",
            "--email",
            "ann@client.test",
            "--phone",
            "+1 415 555 0132",
            "--owner",
            USER,
        ]);
        rig.configure(&[]);
        assert_eq!(rig.sync()["created_remotely"], 1, "{tag}");
        let dav = book(&server).await;
        let bob_href = dav.new_href("bob-1");
        dav.put(
            &bob_href,
            vcard("bob-1", "Bob Ray", "bob@client.test", "NOTE:met at the fair\r\nTEL:(415) 555-0199\r\n"),
            None,
        )
        .await
        .unwrap();
        let report = rig.sync();
        assert_eq!(report["created_in_crm"], 1, "{tag}: {report}");
        let bob = rig.contact_named("Bob Ray");
        assert_eq!(bob["emails"], serde_json::json!(["bob@client.test"]));
        assert_eq!(bob["phones"], serde_json::json!(["+14155550199"]), "{tag}: phones in E.164");
        assert_eq!(bob["source"], "from CRM", "{tag}: imported contacts carry their source");
        let ann_card = card_with(&dav, "ann@client.test").await;
        assert!(ann_card.2.contains("Ann Lee") && ann_card.2.contains("+14155550132"), "{tag}: {}", ann_card.2);
        rig.sync_quiet("after the first sync");

        // An edit on each side.
        let bob_id = bob["id"].to_string();
        let ann_id = rig.contact_named("Ann Lee")["id"].to_string();
        rig.cli(&["contact", "update", &ann_id, "--company", "Acme"]);
        let (href, etag, text) = card_with(&dav, "bob@client.test").await;
        dav.put(&href, text.replace("FN:Bob Ray", "FN:Bob Ray Jr"), Some(&etag)).await.unwrap();
        let report = rig.sync();
        assert_eq!(
            (report["updated_remotely"].as_u64(), report["updated_in_crm"].as_u64()),
            (Some(1), Some(1)),
            "{tag}: {report}"
        );
        assert!(card_with(&dav, "ann@client.test").await.2.contains("ORG:Acme"), "{tag}");
        assert_eq!(rig.contact_named("Bob Ray Jr")["id"].to_string(), bob_id);
        assert!(
            card_with(&dav, "bob@client.test").await.2.contains("NOTE:met at the fair"),
            "{tag}: unmapped properties survive"
        );
        rig.sync_quiet("after edits on each side");

        // The same contact edited on both sides: the policy settles the field changed on
        // both; the other changes merge.
        for (policy, crm_name, remote_name, winner) in [
            ("crm-wins", "Ann CRM", "Ann Phone", "Ann CRM"),
            ("remote-wins", "Ann CRM 2", "Ann Phone 2", "Ann Phone 2"),
        ] {
            rig.configure(&["--conflict", policy]);
            rig.cli(&["contact", "update", &ann_id, "--name", crm_name]);
            let (href, etag, text) = card_with(&dav, "ann@client.test").await;
            let edited = text.lines().filter(|l| !l.starts_with("FN:")).collect::<Vec<_>>().join("\r\n");
            let edited = edited.replace("END:VCARD", &format!("FN:{remote_name}\r\nTEL:+44 20 7946 0958\r\nEND:VCARD"));
            dav.put(&href, edited, Some(&etag)).await.unwrap();
            let report = rig.sync();
            assert_eq!(report["conflicts"], 1, "{tag} {policy}: {report}");
            let ann = rig.contact_named(winner);
            assert!(
                ann["phones"].as_array().unwrap().contains(&serde_json::json!("+442079460958")),
                "{tag} {policy}: {ann}"
            );
            assert!(card_with(&dav, "ann@client.test").await.2.contains(&format!("FN:{winner}")), "{tag} {policy}");
            rig.sync_quiet(&format!("after a conflict with {policy}"));
        }

        // Crash between a remote create and its commit: the card was written, the store
        // still says "creating". The next sync finds it: no second card, no duplicate.
        rig.cli(&["contact", "add", "--name", "Carl Crash", "--email", "carl@client.test", "--owner", USER]);
        let carl_id: i64 = rig.contact_named("Carl Crash")["id"].as_i64().unwrap();
        let store = rig.db.store().await;
        let sync_config = store.contact_sync_config(USER).await.unwrap();
        let planned = dav.new_href("carl-planned");
        store
            .save_sync_item(sync_config.user_id, &planned, "carl-planned", carl_id, "", "creating", None, "")
            .await
            .unwrap();
        dav.put(&planned, vcard("carl-planned", "Carl Crash", "carl@client.test", ""), None).await.unwrap();
        rig.sync();
        assert_eq!(
            cards(&dav).await.iter().filter(|c| c.2.contains("carl@client.test")).count(),
            1,
            "{tag}: one Carl remotely"
        );
        rig.contact_named("Carl Crash");
        rig.sync_quiet("after the crash recovery");

        // A duplicate UID: the second card is flagged, not imported twice.
        dav.put(&dav.new_href("dan-a"), vcard("dan-uid", "Dan Dup", "dan@client.test", ""), None).await.unwrap();
        let second = vcard("dan-uid", "Dan Dup", "dan2@client.test", "");
        if let Err(e) = dav.put(&dav.new_href("dan-b"), second.clone(), None).await {
            // Radicale refuses a second UID over CardDAV (409); other clients' files or
            // a sync tool can still put one there, so plant it in its storage.
            let folder = server.storage.as_ref().unwrap_or_else(|| panic!("{tag}: {e}"));
            std::fs::write(folder.join("dan-b.vcf"), second).unwrap();
        }
        let report = rig.sync();
        assert_eq!(
            (report["created_in_crm"].as_u64(), report["flagged"].as_u64()),
            (Some(1), Some(1)),
            "{tag}: {report}"
        );
        rig.contact_named("Dan Dup");
        rig.sync_quiet("after a duplicate UID");

        // An invalid sync token: a full listing, nothing duplicated.
        sqlx::query("UPDATE contact_sync_configs SET sync_token = 'http://example.invalid/sync/bogus'")
            .execute(store.pool())
            .await
            .unwrap();
        let before = (rig.contacts().len(), cards(&dav).await.len());
        rig.sync_quiet("after an invalid token");
        assert_eq!((rig.contacts().len(), cards(&dav).await.len()), before, "{tag}");

        // Deletions: remotely (the contact stays, tagged, never re-imported) and in the
        // CRM (the card stays: deletions are not propagated by default).
        let (href, etag, _) = card_with(&dav, "bob@client.test").await;
        dav.delete(&href, &etag).await.unwrap();
        assert_eq!(rig.sync()["remote_deletions"], 1, "{tag}");
        let bob = rig.contact_named("Bob Ray Jr");
        let tags = rig.cli(&["contact", "list", "--json"]);
        assert!(tags.contains("deleted in CRM"), "{tag}: {bob}");
        rig.cli(&["contact", "delete", &ann_id]);
        rig.sync_quiet("after deletions");
        assert_eq!(
            cards(&dav).await.iter().filter(|c| c.2.contains("ann@client.test")).count(),
            1,
            "{tag}: Ann stays remotely"
        );
        assert!(rig.contacts().iter().all(|c| c["emails"][0] != "ann@client.test"), "{tag}: Ann is not re-imported");

        // The configuration removed and set again: linked by email, nothing duplicated.
        let before = (rig.contacts().len(), cards(&dav).await.len());
        rig.cli(&["contacts", "remove", "--user", USER]);
        rig.configure(&[]);
        let report = rig.sync();
        assert_eq!(report["created_remotely"], 0, "{tag}: {report}");
        let after = (rig.contacts().len(), cards(&dav).await.len());
        // Everything is linked again, not duplicated; deletions are still remembered.
        assert_eq!(after, before, "{tag}: {report}");
        rig.sync_quiet("after re-configuring");

        // The remote suddenly lists nothing: the guard refuses, the CRM is untouched.
        for (href, etag, _) in cards(&dav).await {
            dav.delete(&href, &etag).await.unwrap();
        }
        let contacts_before = rig.contacts();
        let out = output(mailsync(rig.dir, rig.db.url()).args(["contacts", "sync", "--user", USER]));
        assert_ne!(out.code, 0, "{tag}: the guard must refuse");
        assert!(out.stderr.contains("refusing to sync"), "{tag}: {}", out.stderr);
        assert_eq!(rig.contacts(), contacts_before, "{tag}");
        let status = rig.cli(&["contacts", "status", "--user", USER, "--json"]);
        assert!(status.contains("refusing to sync"), "{tag}: {status}");
    }
}

#[tokio::test]
async fn the_daemon_syncs_on_request_and_imported_contacts_link_past_mail() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let radicale = Radicale::start();
    let url = format!("http://127.0.0.1:{}/", radicale.port);
    for db in TestDb::both() {
        let tag = db.label();
        let dovecot = Dovecot::start(&[(USER, "pw-alice")]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_config(d, db.url(), "");
        let account = add_account(d, db.url(), &dovecot, USER, "pw-alice");
        dovecot.deliver(
            USER,
            &message("Bob <bob@client.test>", USER, "Hello", &format!("bob-1-{tag}@client.test"), "Hi Alice"),
        );
        let daemon = Daemon::start(d, db.url());
        let store = db.store().await;
        wait_initial_sync(&store, account, 2).await;

        // Bob is only in Alice's address book (each backend gets its own book).
        let book_name = format!("Book {tag}");
        let (status, config) = daemon.api(
            "PUT",
            &format!("/v1/users/{USER}/contacts-sync"),
            Some(&serde_json::json!({"url": url, "username": "alice", "password": "pw", "address_book": book_name})),
        );
        assert_eq!(status, 200, "{tag}: {config}");
        assert!(!config.to_string().contains("\"pw\""), "{tag}: the password is never shown: {config}");
        let dav = CardDav::connect(&url, "alice", "pw", &book_name, Duration::from_secs(20)).await.unwrap();
        dav.put(&dav.new_href("bob"), vcard("bob", "Bob Ray", "bob@client.test", ""), None).await.unwrap();
        let (status, _) = daemon.api("POST", &format!("/v1/users/{USER}/contacts-sync/run"), None);
        assert_eq!(status, 202);
        let synced = poll(SYNC_DEADLINE, "the requested sync", || {
            let (_, s) = daemon.api("GET", &format!("/v1/users/{USER}/contacts-sync"), None);
            (s["last_sync_at"].as_i64() > Some(0)).then_some(s)
        });
        assert_eq!(synced["last_result"]["created_in_crm"], 1, "{tag}: {synced}");
        assert_eq!(synced["last_error"], "", "{tag}");

        // The imported contact takes part in linking at once: Bob's past mail links to him.
        let (_, contacts) = daemon.api("GET", "/v1/contacts", None);
        let bob = contacts.as_array().unwrap().iter().find(|c| c["name"] == "Bob Ray").cloned().expect("Bob imported");
        poll(SYNC_DEADLINE, "Bob's past mail linked", || {
            let (_, linked) = daemon.api("GET", &format!("/v1/messages?contact={}", bob["id"]), None);
            (linked.as_array().map(Vec::len) == Some(1)).then_some(())
        });

        // A CRM edit of Bob (Alice's now) reaches her address book within seconds, not
        // at the sync's interval (15 minutes).
        let (status, _) =
            daemon.api("PATCH", &format!("/v1/contacts/{}", bob["id"]), Some(&serde_json::json!({"company": "Acme"})));
        assert_eq!(status, 200);
        let card = dav.fetch(&[dav.new_href("bob")]).await.unwrap();
        assert!(!card[0].text.contains("ORG:Acme"), "{tag}: not yet");
        let started = std::time::Instant::now();
        let mut edited = false;
        while started.elapsed() < SYNC_DEADLINE && !edited {
            edited = dav.fetch(&[dav.new_href("bob")]).await.unwrap()[0].text.contains("ORG:Acme");
            if !edited {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(edited, "{tag}: the CRM edit did not reach the address book");
        assert!(started.elapsed() < Duration::from_secs(10), "{tag}: took {:?}", started.elapsed());
        let (status, _) = daemon.api("DELETE", &format!("/v1/users/{USER}/contacts-sync"), None);
        assert_eq!(status, 204);
    }
}

/// A new card is linked only to a contact of this user (or an unowned one) that no other
/// card syncs with: a second card for an already synced contact does not duplicate it,
/// and a colleague's contact is neither merged into nor copied; both cards are flagged.
#[tokio::test]
async fn a_new_card_never_duplicates_a_synced_contact_nor_takes_a_colleagues() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for server in servers() {
        let scratch = Scratch::new();
        let rig = scratch.rig(&server);
        rig.add_user("carl@example.test");
        let tag = server.name;
        rig.cli(&["contact", "add", "--name", "Ann Lee", "--email", "ann@client.test", "--owner", USER]);
        rig.cli(&[
            "contact",
            "add",
            "--name",
            "Cy Carlson",
            "--email",
            "cy@client.test",
            "--owner",
            "carl@example.test",
        ]);
        rig.configure(&[]);
        assert_eq!(rig.sync()["created_remotely"], 1, "{tag}: only the user's own contact goes out");

        // Another card for Ann (a second phone's copy), and a card with Carl's contact's address.
        let dav = book(&server).await;
        dav.put(&dav.new_href("ann-2"), vcard("ann-2", "Ann L.", "ann@client.test", ""), None).await.unwrap();
        dav.put(&dav.new_href("cy-1"), vcard("cy-1", "Cy Renamed", "cy@client.test", ""), None).await.unwrap();
        let report = rig.sync();
        assert_eq!(
            (report["created_in_crm"].as_u64(), report["flagged"].as_u64()),
            (Some(0), Some(2)),
            "{tag}: {report}"
        );
        assert_eq!(report["updated_in_crm"], 0, "{tag}: {report}");
        let contacts = rig.contacts();
        assert_eq!(contacts.len(), 2, "{tag}: no duplicate: {contacts:?}");
        assert_eq!(rig.contact_named("Cy Carlson")["emails"], serde_json::json!(["cy@client.test"]), "{tag}");
        assert_eq!(rig.contact_named("Ann Lee")["emails"], serde_json::json!(["ann@client.test"]), "{tag}");
        rig.sync_quiet("after flagging");

        // The flagged cards are listed with their reasons, and a person decides.
        let flagged = |rig: &Rig| -> Vec<Value> {
            let out = rig.cli(&["contacts", "flagged", "--user", USER, "--json"]);
            serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
        };
        let listed = flagged(&rig);
        assert_eq!(listed.len(), 2, "{tag}: {listed:?}");
        assert!(
            listed.iter().any(|f| f["reason"].to_string().contains("synced with another card")),
            "{tag}: {listed:?}"
        );
        assert!(listed.iter().any(|f| f["reason"].to_string().contains("another user")), "{tag}: {listed:?}");
        let card_of =
            |uid: &str| listed.iter().find(|f| f["uid"] == uid).unwrap()["card"].as_str().unwrap().to_string();
        let ann = rig.contact_named("Ann Lee")["id"].to_string();
        let refused = output(mailsync(rig.dir, rig.db.url()).args([
            "contacts",
            "resolve",
            "--user",
            USER,
            "--card",
            &card_of("ann-2"),
            "--link",
            &ann,
        ]));
        assert_ne!(refused.code, 0, "{tag}: Ann already syncs with her first card");
        assert!(refused.stderr.contains("is synced with card"), "{tag}: {}", refused.stderr);
        for uid in ["ann-2", "cy-1"] {
            rig.cli(&["contacts", "resolve", "--user", USER, "--card", &card_of(uid), "--ignore"]);
        }
        assert!(flagged(&rig).is_empty(), "{tag}");
        rig.sync_quiet("after ignoring both");

        // Two unowned contacts share a phone; cards with just that phone match both.
        rig.cli(&["contact", "add", "--name", "Dee One", "--email", "dee1@client.test", "--phone", "+1 415 555 0111"]);
        rig.cli(&["contact", "add", "--name", "Dee Two", "--email", "dee2@client.test", "--phone", "+1 415 555 0111"]);
        for uid in ["dee-1", "dee-3"] {
            let card =
                format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{uid}\r\nTEL:+14155550111\r\nEND:VCARD\r\n");
            dav.put(&dav.new_href(uid), card, None).await.unwrap();
        }
        assert_eq!(rig.sync()["flagged"], 2, "{tag}: several candidates each");
        let listed = flagged(&rig);
        let card_of =
            |uid: &str| listed.iter().find(|f| f["uid"] == uid).unwrap()["card"].as_str().unwrap().to_string();
        let dee_one = rig.contact_named("Dee One")["id"].to_string();
        rig.cli(&["contacts", "resolve", "--user", USER, "--card", &card_of("dee-1"), "--link", &dee_one]);
        rig.cli(&["contacts", "resolve", "--user", USER, "--card", &card_of("dee-3"), "--import"]);
        let report = rig.sync();
        assert_eq!(
            (report["linked"].as_u64(), report["created_in_crm"].as_u64()),
            (Some(1), Some(1)),
            "{tag}: {report}"
        );
        rig.contact_named("dee-3");
        assert!(
            card_with(&dav, "dee1@client.test").await.2.contains("UID:dee-1"),
            "{tag}: the card got Dee One's email"
        );
        assert!(flagged(&rig).is_empty(), "{tag}");
        rig.sync_quiet("after resolving");
    }
}

/// Each side keeps its primary email and phone (the first one) through the sync: a
/// contact's card lists them first, and a remote edit written to the CRM leaves the
/// contact's order as it was (not the alphabetical order the merge compares in).
#[tokio::test]
async fn each_side_keeps_its_primary_email_and_phone() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for server in servers() {
        let scratch = Scratch::new();
        let rig = scratch.rig(&server);
        let tag = server.name;
        rig.cli(&["contact", "add", "--name", "Zed Park", "--email", "zed@client.test", "--email", "amy@client.test"]);
        let zed = rig.contact_named("Zed Park")["id"].to_string();
        rig.cli(&[
            "contact",
            "update",
            &zed,
            "--owner",
            USER,
            "--phone",
            "+1 415 555 0199",
            "--phone",
            "+1 415 555 0100",
        ]);
        rig.configure(&[]);
        assert_eq!(rig.sync()["created_remotely"], 1, "{tag}");
        let dav = book(&server).await;
        let (href, etag, text) = card_with(&dav, "zed@client.test").await;
        let first = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).map(String::from);
        assert!(first("EMAIL").is_some_and(|l| l.ends_with("zed@client.test")), "{tag}: {text}");
        assert!(first("TEL").is_some_and(|l| l.ends_with("+14155550199")), "{tag}: {text}");

        // A remote edit comes back into the CRM: the contact's order stays.
        dav.put(&href, text.replace("FN:Zed Park", "FN:Zed Parker"), Some(&etag)).await.unwrap();
        assert_eq!(rig.sync()["updated_in_crm"], 1, "{tag}");
        let contact = rig.contact_named("Zed Parker");
        assert_eq!(contact["emails"], serde_json::json!(["zed@client.test", "amy@client.test"]), "{tag}");
        assert_eq!(contact["phones"], serde_json::json!(["+14155550199", "+14155550100"]), "{tag}");
        rig.sync_quiet("after the edit");
    }
}

/// The one-way modes and the origin policy. crm-to-remote: the CRM's contacts are the
/// truth (remote edits are written over, remote-only cards stay out). remote-to-crm: the
/// address book is (CRM edits are replaced, CRM-only contacts stay in). origin: remote
/// edits apply to contacts that came from the remote only.
#[tokio::test]
async fn one_way_modes_and_the_origin_policy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for server in servers() {
        let scratch = Scratch::new();
        let rig = scratch.rig(&server);
        let tag = server.name;
        rig.cli(&["contact", "add", "--name", "Ann Lee", "--email", "ann@client.test", "--owner", USER]);
        let ann = rig.contact_named("Ann Lee")["id"].to_string();
        let dav = book(&server).await;
        let edit_card = |needle: &'static str, from: &'static str, to: &'static str| {
            let dav = &dav;
            async move {
                let (href, etag, text) = card_with(dav, needle).await;
                dav.put(&href, text.replace(from, to), Some(&etag)).await.unwrap();
            }
        };

        // CRM to remote.
        rig.configure(&["--direction", "crm-to-remote"]);
        assert_eq!(rig.sync()["created_remotely"], 1, "{tag}");
        dav.put(&dav.new_href("bob"), vcard("bob", "Bob Ray", "bob@client.test", ""), None).await.unwrap();
        edit_card("ann@client.test", "FN:Ann Lee", "FN:Ann Phone").await;
        let report = rig.sync();
        assert_eq!(
            (report["created_in_crm"].as_u64(), report["updated_remotely"].as_u64()),
            (Some(0), Some(1)),
            "{tag}: {report}"
        );
        rig.contact_named("Ann Lee");
        assert!(
            card_with(&dav, "ann@client.test").await.2.contains("FN:Ann Lee"),
            "{tag}: the CRM's name written back"
        );
        rig.sync_quiet("crm-to-remote");

        // Remote to CRM.
        rig.configure(&["--direction", "remote-to-crm"]);
        rig.cli(&["contact", "update", &ann, "--company", "Acme"]);
        rig.cli(&["contact", "add", "--name", "Cy Local", "--email", "cy@client.test", "--owner", USER]);
        let report = rig.sync();
        assert_eq!(
            (report["created_in_crm"].as_u64(), report["updated_in_crm"].as_u64(), report["created_remotely"].as_u64()),
            (Some(1), Some(1), Some(0)),
            "{tag}: Bob comes in, Ann's company is the book's (none), Cy stays in the CRM: {report}"
        );
        assert_eq!(rig.contact_named("Ann Lee")["company"], "", "{tag}");
        rig.sync_quiet("remote-to-crm");

        // Two-way with the origin policy.
        rig.configure(&["--direction", "two-way", "--conflict", "origin"]);
        assert_eq!(rig.sync()["created_remotely"], 1, "{tag}: Cy goes out now");
        edit_card("ann@client.test", "FN:Ann Lee", "FN:Ann Phone").await;
        edit_card("bob@client.test", "FN:Bob Ray", "FN:Bob Phone").await;
        let report = rig.sync();
        assert_eq!(
            (report["updated_in_crm"].as_u64(), report["updated_remotely"].as_u64()),
            (Some(1), Some(1)),
            "{tag}: {report}"
        );
        rig.contact_named("Ann Lee");
        rig.contact_named("Bob Phone");
        assert!(
            card_with(&dav, "ann@client.test").await.2.contains("FN:Ann Lee"),
            "{tag}: CRM-made, the CRM's name stands"
        );
        // Both sides change a contact that came from the remote: the remote wins.
        let bob = rig.contact_named("Bob Phone")["id"].to_string();
        rig.cli(&["contact", "update", &bob, "--name", "Bob CRM"]);
        edit_card("bob@client.test", "FN:Bob Phone", "FN:Bob Phone 2").await;
        assert_eq!(rig.sync()["conflicts"], 1, "{tag}");
        rig.contact_named("Bob Phone 2");
        rig.sync_quiet("origin");
    }
}
