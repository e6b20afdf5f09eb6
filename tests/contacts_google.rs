//! Contacts sync with the Google People API, against the local fake in
//! `tests/common/google.rs` (which follows Google's REST reference) and the local OAuth
//! server: the scenarios of the CardDAV tests, plus throttling (429) and batching.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::path::Path;
use std::time::Duration;

use common::google::{PeopleServer, members};
use common::oauth::OAuthServer;
use common::*;
use serde_json::{Value, json};

const USER: &str = "alice@example.test";

struct Rig<'a> {
    dir: &'a Path,
    db: &'a TestDb,
    people: &'a PeopleServer,
}

impl Rig<'_> {
    fn cli(&self, args: &[&str]) -> String {
        ok(mailsync(self.dir, self.db.url()).args(args))
    }

    fn configure(&self, extra: &[&str]) {
        let mut args = vec!["contacts", "configure", "--user", USER, "--provider", "google", "--address-book", "CRM"];
        let url = self.people.url();
        args.extend(["--url", &url]);
        args.extend(extra);
        self.cli(&args);
    }

    fn sync(&self) -> Value {
        serde_json::from_str(&self.cli(&["contacts", "sync", "--user", USER, "--json"])).expect("report")
    }

    /// A sync that changes nothing on either side (and sends Google no write).
    fn sync_quiet(&self, step: &str) {
        let writes = self.people.writes();
        let report = self.sync();
        for key in
            ["created_in_crm", "created_remotely", "updated_in_crm", "updated_remotely", "flagged", "remote_deletions"]
        {
            assert_eq!(report[key], 0, "{step}: a second sync did something: {report}");
        }
        assert_eq!(self.people.writes(), writes, "{step}: a second sync wrote to Google");
    }

    fn contacts(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.cli(&["contact", "list", "--json"])).unwrap().as_array().unwrap().clone()
    }

    fn contact_named(&self, name: &str) -> Value {
        let all = self.contacts();
        let found: Vec<&Value> = all.iter().filter(|c| c["name"] == name).collect();
        assert_eq!(found.len(), 1, "one CRM contact {name}: {all:?}");
        found[0].clone()
    }

    /// The contacts in the synced group, on Google's side.
    fn group(&self) -> Vec<Value> {
        let all = self.people.contacts();
        let group = all
            .iter()
            .flat_map(|c| c["memberships"].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m["contactGroupMembership"]["contactGroupResourceName"].as_str().map(String::from))
            .find(|g| self.people.group_name_of(g).as_deref() == Some("CRM"))
            .expect("the CRM group has members");
        members(&all, &group).into_iter().cloned().collect()
    }

    fn google_with_email(&self, email: &str) -> Value {
        let found: Vec<Value> = self.group().into_iter().filter(|c| c.to_string().contains(email)).collect();
        assert_eq!(found.len(), 1, "one Google contact with {email}");
        found[0].clone()
    }
}

fn person(name: &str, email: &str, group: &str) -> Value {
    json!({
        "names": [{"unstructuredName": name}],
        "emailAddresses": [{"value": email}],
        "memberships": [{"contactGroupMembership": {"contactGroupResourceName": group}}],
    })
}

/// The OAuth server, the People fake, a store and a user whose mail account holds the
/// OAuth grant.
struct Env {
    _oauth: OAuthServer,
    people: PeopleServer,
    db: TestDb,
    dir: tempfile::TempDir,
}

impl Env {
    fn start(db: TestDb) -> Env {
        let oauth = OAuthServer::start(Duration::from_secs(3600));
        oauth.grant("rt-alice", USER);
        let people = PeopleServer::start(oauth.validator());
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_config(d, db.url(), "");
        ok(mailsync(d, db.url())
            .args([
                "account",
                "add",
                "--email",
                USER,
                "--imap-host",
                "127.0.0.1",
                "--imap-port",
                "1",
                "--tls",
                "starttls",
            ])
            .args(["--auth", "xoauth2", "--oauth-provider", "custom", "--oauth-client-id", "mailsync-test"])
            .args(["--oauth-token-url", &oauth.token_url(), "--refresh-token-env", "RT"])
            .env("RT", "rt-alice"));
        Env { _oauth: oauth, people, db, dir }
    }

    fn rig(&self) -> Rig<'_> {
        Rig { dir: self.dir.path(), db: &self.db, people: &self.people }
    }
}

#[tokio::test]
async fn two_way_sync_with_the_google_people_api() {
    let env = Env::start(TestDb::postgres());
    let (rig, people, db, d) = (env.rig(), &env.people, &env.db, env.dir.path());

    // First sync both ways; the group is created; Google throttles at first.
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
    people.throttle(2);
    assert_eq!(rig.sync()["created_remotely"], 1);
    let ann = rig.google_with_email("ann@client.test");
    let group =
        ann["memberships"][0]["contactGroupMembership"]["contactGroupResourceName"].as_str().unwrap().to_string();
    let bob = people.add(person("Bob Ray", "bob@client.test", &group));
    people.add(person("Not Synced", "other@client.test", "contactGroups/myContacts"));
    let report = rig.sync();
    assert_eq!(report["created_in_crm"], 1, "only the group's members: {report}");
    assert_eq!(rig.contact_named("Bob Ray")["source"], "from Google");
    rig.sync_quiet("after the first sync");

    // An edit on each side.
    let ann_id = rig.contact_named("Ann Lee")["id"].to_string();
    rig.cli(&["contact", "update", &ann_id, "--company", "Acme"]);
    people.edit(&bob, |p| p["names"] = json!([{"unstructuredName": "Bob Ray Jr"}]));
    let report = rig.sync();
    assert_eq!(
        (report["updated_remotely"].as_u64(), report["updated_in_crm"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(rig.google_with_email("ann@client.test")["organizations"][0]["name"], "Acme");
    rig.contact_named("Bob Ray Jr");
    rig.sync_quiet("after edits on each side");

    // Both sides, each policy.
    let ann_rn = rig.google_with_email("ann@client.test")["resourceName"].as_str().unwrap().to_string();
    for (policy, crm_name, remote_name, winner) in
        [("crm-wins", "Ann CRM", "Ann Phone", "Ann CRM"), ("remote-wins", "Ann CRM 2", "Ann Phone 2", "Ann Phone 2")]
    {
        rig.configure(&["--conflict", policy]);
        rig.cli(&["contact", "update", &ann_id, "--name", crm_name]);
        people.edit(&ann_rn, |p| {
            p["names"] = json!([{"unstructuredName": remote_name}]);
            p["phoneNumbers"] = json!([{"value": "+44 20 7946 0958"}]);
        });
        let report = rig.sync();
        assert_eq!(report["conflicts"], 1, "{policy}: {report}");
        let ann = rig.contact_named(winner);
        assert_eq!(ann["phones"], json!(["+442079460958"]), "{policy}: the phone merged: {ann}");
        assert_eq!(rig.google_with_email("ann@client.test")["names"][0]["unstructuredName"], winner, "{policy}");
        rig.sync_quiet(&format!("after a conflict with {policy}"));
    }

    // A crash between the create call and its commit: the contact exists at Google with
    // our uid in clientData; the store still has the placeholder. No duplicate.
    rig.cli(&["contact", "add", "--name", "Carl Crash", "--email", "carl@client.test", "--owner", USER]);
    let carl_id = rig.contact_named("Carl Crash")["id"].as_i64().unwrap();
    let store = db.store().await;
    let config = store.contact_sync_config(USER).await.unwrap();
    store
        .save_sync_item(config.user_id, "pending:carl-uid", "carl-uid", carl_id, "", "creating", None, "")
        .await
        .unwrap();
    let mut carl = person("Carl Crash", "carl@client.test", &group);
    carl["clientData"] = json!([{"key": "mailsync-uid", "value": "carl-uid"}]);
    people.add(carl);
    rig.sync();
    rig.google_with_email("carl@client.test");
    rig.contact_named("Carl Crash");
    rig.sync_quiet("after the crash recovery");

    // A duplicate uid (a client copied a contact with its clientData): flagged.
    let mut copy = person("Carl Copy", "carl.copy@client.test", &group);
    copy["clientData"] = json!([{"key": "mailsync-uid", "value": "carl-uid"}]);
    people.add(copy);
    assert_eq!(rig.sync()["flagged"], 1);
    assert!(rig.contacts().iter().all(|c| c["name"] != "Carl Copy"));
    rig.sync_quiet("after a duplicate uid");

    // An expired sync token: a full sync, nothing duplicated.
    people.expire_sync_tokens();
    let before = (rig.contacts().len(), rig.group().len());
    let report = rig.sync();
    assert_eq!(report["full_listing"], true, "{report}");
    assert_eq!((rig.contacts().len(), rig.group().len()), before);
    rig.sync_quiet("after an expired token");

    // Bob moved to another group: not a deletion (no tag, the contact stays); put back,
    // he is synced again, with no duplicate on either side.
    let crm_before = rig.contacts().len();
    people.edit(&bob, |p| {
        p["memberships"] = json!([{"contactGroupMembership": {"contactGroupResourceName": "contactGroups/friends"}}])
    });
    let report = rig.sync();
    assert_eq!(
        (report["remote_deletions"].as_u64(), report["created_remotely"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    let bob_contact = rig.contact_named("Bob Ray Jr");
    assert!(!bob_contact["tags"].to_string().contains("deleted"), "moving groups is no deletion: {bob_contact}");
    rig.sync_quiet("after moving a contact to another group");
    people.edit(&bob, |p| {
        p["memberships"] = json!([{"contactGroupMembership": {"contactGroupResourceName": group.clone()}}]);
        p["names"] = json!([{"unstructuredName": "Bob Ray III"}]);
    });
    let report = rig.sync();
    assert_eq!((report["created_in_crm"].as_u64(), report["updated_in_crm"].as_u64()), (Some(0), Some(1)), "{report}");
    assert_eq!(rig.contact_named("Bob Ray III")["id"], bob_contact["id"], "the same contact, synced again");
    assert_eq!(rig.contacts().len(), crm_before);
    rig.sync_quiet("after putting the contact back");

    // Deletions on each side.
    people.delete(&bob);
    assert_eq!(rig.sync()["remote_deletions"], 1);
    assert!(rig.contact_named("Bob Ray III")["tags"].to_string().contains("deleted in Google"));
    rig.cli(&["contact", "delete", &ann_id]);
    rig.sync_quiet("after deletions");
    rig.google_with_email("ann@client.test");

    // The group suddenly empty: the guard refuses and nothing changes.
    rig.cli(&["contact", "add", "--name", "Dora", "--email", "dora@client.test", "--owner", USER]);
    assert_eq!(rig.sync()["created_remotely"], 1);
    for c in rig.group() {
        people.delete(c["resourceName"].as_str().unwrap());
    }
    let before = rig.contacts();
    let out = output(mailsync(d, db.url()).args(["contacts", "sync", "--user", USER]));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("refusing to sync"), "{}", out.stderr);
    assert_eq!(rig.contacts(), before);
}

#[tokio::test]
async fn writes_go_in_batches_of_two_hundred() {
    let env = Env::start(TestDb::sqlite());
    let (rig, people, d) = (env.rig(), &env.people, env.dir.path());
    let csv = d.join("contacts.csv");
    let rows: String = (0..450).map(|i| format!("Person {i},p{i}@client.test,,\n")).collect();
    std::fs::write(&csv, format!("name,email,phone,company\n{rows}")).unwrap();
    rig.cli(&["contact", "import", csv.to_str().unwrap(), "--owner", USER]);
    rig.configure(&[]);
    let report = rig.sync();
    assert_eq!(report["created_remotely"], 450, "{report}");
    assert_eq!(people.writes(), 3, "450 creations in 3 calls");
    assert_eq!(rig.group().len(), 450);
    rig.sync_quiet("after a bulk first sync");
}
