//! The `mailsync` binary: daemon lifecycle, CLI commands on both backends, bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

#[test]
fn daemon_runs_on_defaults_and_stops_on_sigterm() {
    // No config file, no MAILSYNC_* variables: everything from defaults, under ./data.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MAILSYNC_")) {
        cmd.env_remove(k);
    }
    let log = dir.path().join("daemon.log");
    let mut child = cmd
        .arg("run")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The default API port is fixed by design (127.0.0.1:8087); other tests never use it.
    let status = poll(START_DEADLINE, "/healthz on the default port", || {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("exited {s}: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        http(8087, "GET", "/healthz", None, None).ok()
    });
    assert_eq!(status.0, 200);
    assert!(dir.path().join("data/mailsync.db").exists(), "SQLite store created");
    assert!(dir.path().join("data/master.key").exists());
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let exit = poll(std::time::Duration::from_secs(15), "exit after SIGTERM", || child.try_wait().ok().flatten());
    assert!(exit.success(), "{exit}: {}", std::fs::read_to_string(&log).unwrap_or_default());
}

#[test]
fn account_and_crm_commands_on_both_backends() {
    for db in TestDb::both() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ms = || mailsync(d, db.url());
        std::fs::write(d.join("pw"), "s3cret-pw\n").unwrap();
        let out = ok(ms().args(["account", "add", "--email", "Alice@Example.com", "--imap-host", "localhost"]).args([
            "--password-file",
            "pw",
            "--org",
            "acme",
            "--json",
        ]));
        let id = serde_json::from_str::<Value>(&out).unwrap()["id"].as_i64().expect("id");

        let out = ok(ms().args(["account", "show", &id.to_string(), "--json"]));
        let account: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(account["email"], "alice@example.com", "{}", db.label());
        assert_eq!(account["imap_port"], 993);
        assert_eq!(account["org"], "acme");
        let listed = ok(ms().args(["account", "list", "--json"]));
        assert!(!listed.contains("s3cret-pw"), "no secret in output");
        assert_eq!(serde_json::from_str::<Value>(&listed).unwrap().as_array().unwrap().len(), 1);

        ok(ms().args(["lead", "add", "--org", "acme", "--name", "Lee", "--email", "lee@prospect.example"]));
        let contact = ok(ms().args([
            "contact",
            "add",
            "--org",
            "acme",
            "--name",
            "Ann",
            "--email",
            "ANN@client.example",
            "--phone",
            "+1 555 0100",
            "--json",
        ]));
        let contact: Value = serde_json::from_str(&contact).unwrap();
        assert_eq!(contact["emails"][0], "ann@client.example");
        let contact_id = contact["id"].as_i64().unwrap().to_string();
        let deal = ok(ms().args([
            "deal",
            "add",
            "--org",
            "acme",
            "--title",
            "Renewal",
            "--value",
            "1250.50",
            "--contact",
            &contact_id,
            "--json",
        ]));
        let deal: Value = serde_json::from_str(&deal).unwrap();
        assert_eq!(deal["value_cents"], 125050);
        assert_eq!(deal["contacts"][0].as_i64().unwrap().to_string(), contact_id);

        std::fs::write(d.join("c.csv"), "Name,Email,Phone,Company\nBo,bo@client.example,,Client\nCy,cy@client.example;cy2@client.example,+44 20 7946 0000,\nAnn again,ann@client.example,,\n").unwrap();
        let summary: Value =
            serde_json::from_str(&ok(ms().args(["contact", "import", "c.csv", "--org", "acme", "--json"]))).unwrap();
        assert_eq!(summary, serde_json::json!({"created": 2, "existing": 1}), "{}", db.label());
        let contacts: Value =
            serde_json::from_str(&ok(ms().args(["contact", "list", "--org", "acme", "--json"]))).unwrap();
        assert_eq!(contacts.as_array().unwrap().len(), 3);
        assert_eq!(contacts[2]["emails"], serde_json::json!(["cy@client.example", "cy2@client.example"]));
        let leads: Value = serde_json::from_str(&ok(ms().args(["lead", "list", "--json"]))).unwrap();
        assert_eq!(leads[0]["status"], "new");
        let status: Value = serde_json::from_str(&ok(ms().args(["status", "--json"]))).unwrap();
        assert_eq!(status["accounts"][0]["id"], id);

        ok(ms().args(["account", "remove", &id.to_string()]));
        let out = output(ms().args(["account", "show", &id.to_string()]));
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains(&format!("no mail account with id {id}")), "{}", out.stderr);
    }
}

/// Asserts a failed run: non-zero exit and exactly one line on stderr containing `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert_ne!(out.code, 0, "expected failure, got: {}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {}", out.stderr);
    assert!(lines[0].contains(needle), "`{needle}` not in: {}", lines[0]);
}

#[test]
fn bad_input_gives_one_line_errors_and_writes_nothing() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ms = || mailsync(d, db.url());

    // Malformed config: names the file and the key.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[api]\nlisten = \"nowhere\"\n").unwrap();
    let out = output(Command::new(BIN).arg("--config").arg(&bad).arg("migrate"));
    assert_one_line_error(&out, "api.listen");
    assert!(out.stderr.contains("bad.toml"), "{}", out.stderr);
    std::fs::write(&bad, "[sync]\nmax_recipient = 5\n").unwrap();
    let out = output(Command::new(BIN).arg("--config").arg(&bad).arg("migrate"));
    assert_one_line_error(&out, "max_recipient");

    // Unreachable database: one line, password redacted.
    let out = output(
        Command::new(BIN)
            .env("MAILSYNC_DATABASE_URL", "postgres://u:hunter2@127.0.0.1:1/x")
            .env("MAILSYNC_DATABASE_CONNECT_TIMEOUT_SECS", "2")
            .arg("migrate"),
    );
    assert_one_line_error(
        &out,
        "cannot open database postgres://u:***@127.0.0.1:1/x: error communicating with database: Connection refused",
    );
    assert!(!out.stderr.contains("hunter2"));

    // A wrong --password-file path: nothing is created, not even the database.
    let out = output(mailsync_unmigrated(d, db.url()).args([
        "account",
        "add",
        "--email",
        "a@example.com",
        "--imap-host",
        "h",
        "--password-file",
        "missing.txt",
    ]));
    assert_one_line_error(&out, "cannot read password file missing.txt");
    if let TestDb::Sqlite { dir: db_dir, .. } = &db {
        assert!(!db_dir.path().join("mailsync.db").exists(), "nothing half-written");
    }

    // Duplicate account for the same user: refused, the first one intact.
    std::fs::write(d.join("pw"), "pw1").unwrap();
    ok(ms().args(["account", "add", "--email", "a@example.com", "--imap-host", "h1", "--password-file", "pw"]));
    let out =
        output(ms().args(["account", "add", "--email", "A@example.com", "--imap-host", "h2", "--password-file", "pw"]));
    assert_one_line_error(&out, "already has mail account");
    let accounts: Value = serde_json::from_str(&ok(ms().args(["account", "list", "--json"]))).unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 1);
    assert_eq!(accounts[0]["imap_host"], "h1");

    // Other bad values, each named.
    let out =
        output(ms().args(["account", "add", "--email", "not-an-address", "--imap-host", "h", "--password-file", "pw"]));
    assert_one_line_error(&out, "not-an-address");
    std::fs::write(d.join("bad-ca.pem"), "not a certificate").unwrap();
    let out = output(ms().args([
        "account",
        "add",
        "--email",
        "b@example.com",
        "--imap-host",
        "h",
        "--password-file",
        "pw",
        "--ca-file",
        "bad-ca.pem",
    ]));
    assert_one_line_error(&out, "bad-ca.pem");
    let out = output(ms().args(["deal", "add", "--title", "X", "--status", "maybe"]));
    assert_one_line_error(&out, "maybe");

    // A CSV with one bad row imports nothing and names the line.
    std::fs::write(d.join("c.csv"), "name,email\nGood,good@example.com\nBad,bad@@example\n").unwrap();
    let out = output(ms().args(["contact", "import", "c.csv"]));
    assert_one_line_error(&out, "c.csv line 3");
    std::fs::write(d.join("u.csv"), "name,mail\nX,x@example.com\n").unwrap();
    let out = output(ms().args(["contact", "import", "u.csv"]));
    assert_one_line_error(&out, "unknown column `mail`");
    let contacts: Value = serde_json::from_str(&ok(ms().args(["contact", "list", "--json"]))).unwrap();
    assert_eq!(contacts.as_array().unwrap().len(), 0, "nothing imported");
}

#[test]
fn contact_import_shows_a_progress_bar_on_a_terminal_only() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("some.csv"), "name,email\nCy,cy@some.example\n").unwrap();
    // Piped: the summary only, nothing drawn on stderr.
    let piped = output(mailsync(d, db.url()).args(["contact", "import", "some.csv"]));
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(!piped.stderr.contains("importing ["), "no bar when piped: {}", piped.stderr);

    // On a terminal (script(1) gives the command a pseudo-terminal): the bar, redrawn in
    // place, ending at 100%.
    std::fs::write(d.join("more.csv"), "name,email\nAnn,ann@more.example\nBo,bo@more.example\n").unwrap();
    let cmd = mailsync(d, db.url())
        .args(["contact", "import", "more.csv"])
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let line = std::iter::once(BIN.to_string()).chain(cmd).collect::<Vec<_>>().join(" ");
    let tty = output(Command::new("script").args(["-qefc", &line, "/dev/null"]).current_dir(d));
    assert_eq!(tty.code, 0, "{}{}", tty.stdout, tty.stderr);
    assert!(tty.stdout.contains("\r\x1b[2Kimporting ["), "{:?}", tty.stdout);
    assert!(tty.stdout.contains("100% 2/2"), "{:?}", tty.stdout);
    assert!(tty.stdout.contains("imported 2 contacts"), "{:?}", tty.stdout);
}

/// Only `run` and `migrate` change the schema: any other command on a store whose schema is
/// older (pending migrations) or newer (a migration this binary does not know) than the
/// binary exits non-zero and says what to do, and leaves the schema as it was.
#[test]
fn commands_refuse_a_store_whose_schema_differs_from_the_binary() {
    for db in TestDb::both() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = output(mailsync_unmigrated(d, db.url()).args(["contact", "list"]));
        assert_one_line_error(&out, "run `mailsync migrate`");
        let out = output(mailsync_unmigrated(d, db.url()).args(["status"]));
        assert_one_line_error(&out, "migrations pending");

        ok(mailsync_unmigrated(d, db.url()).arg("migrate"));
        ok(mailsync_unmigrated(d, db.url()).args(["contact", "list"]));

        // A migration from a newer mailsync.
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = db.store().await;
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99990101000000, 'from the future', TRUE, $1, 0)",
            )
            .bind(vec![0u8; 48])
            .execute(store.pool())
            .await
            .unwrap();
        });
        let out = output(mailsync_unmigrated(d, db.url()).args(["contact", "list"]));
        assert_one_line_error(&out, "newer than this binary");
    }
}
