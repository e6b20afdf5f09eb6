//! The BCC-drop listener with real peers: Postfix relaying the drop domain to it, swaks
//! and a raw SMTP client as senders, dnsmasq publishing DKIM keys, Dovecot for the
//! synced Sent folder, both store backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use serde_json::json;

const DROP_DEADLINE: Duration = Duration::from_secs(30);
const ALICE: &str = "alice@example.test";
/// Alice's phone sends from here; its domain signs with DKIM.
const ALICE_PHONE: &str = "alice@phone.test";

/// A DKIM key for `phone.test` (selector `sel`) and the DNS records publishing it.
struct Signer {
    pkcs8: Vec<u8>,
    txt: String,
}

impl Signer {
    fn new() -> Signer {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let public = mailsync::outbound::compose::encode_base64(pair.public_key().as_ref());
        Signer { pkcs8, txt: format!("v=DKIM1; k=ed25519; p={public}") }
    }

    fn records(&self) -> Vec<(&str, &str)> {
        vec![("sel._domainkey.phone.test", self.txt.as_str())]
    }

    /// `raw` with a DKIM-Signature of `phone.test` prepended.
    fn sign(&self, raw: &str) -> String {
        let key = Ed25519Key::from_pkcs8_der(&self.pkcs8).unwrap();
        let signature = DkimSigner::from_key(key)
            .domain("phone.test")
            .selector("sel")
            .headers(["From", "To", "Subject", "Message-ID"])
            .sign(raw.as_bytes())
            .unwrap();
        format!("{}{raw}", signature.to_header())
    }
}

/// A user (through an offline mail account) with the phone address as their own.
fn setup_user(dir: &Path, db_url: &str, user: &str, also: &str) -> String {
    std::fs::write(dir.join("pw"), "pw").unwrap();
    ok(mailsync(dir, db_url)
        .args(["account", "add", "--email", user, "--imap-host", "127.0.0.1", "--tls", "starttls"])
        .args(["--imap-port", &free_port().to_string(), "--password-file", "pw"]));
    if !also.is_empty() {
        ok(mailsync(dir, db_url).args(["user-add-address", "--user", user, also]));
    }
    drop_address(dir, db_url, user)
}

fn drop_address(dir: &Path, db_url: &str, user: &str) -> String {
    ok(mailsync(dir, db_url).args(["bcc-address", "--user", user])).trim().to_string()
}

fn deliveries(daemon: &Daemon) -> Vec<serde_json::Value> {
    let (status, list) = daemon.api("GET", "/v1/bcc-drops", None);
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

/// Waits for the `n`-th recorded delivery (oldest first) and returns it.
fn wait_delivery(daemon: &Daemon, n: usize) -> serde_json::Value {
    poll(DROP_DEADLINE, &format!("drop delivery #{n} recorded"), || {
        let mut list = deliveries(daemon);
        list.reverse();
        list.get(n - 1).cloned()
    })
}

fn phone_message(to: &str, subject: &str, message_id: &str) -> String {
    message(ALICE_PHONE, to, subject, message_id, "Sent from my phone")
}

/// A raw SMTP client: each call sends `line` (unless empty) and returns the next reply
/// (all its lines). Replies that never come are an error after the read timeout.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut client = Client { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream };
        let greeting = client.reply().unwrap();
        assert!(greeting.starts_with("220"), "{greeting}");
        client
    }

    fn reply(&mut self) -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err(format!("connection closed after {all:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("{e} after {all:?}")),
            }
            all += &line;
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    }

    fn send(&mut self, data: &str) {
        self.writer.write_all(data.as_bytes()).unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.reply().unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// MAIL, RCPT(s), DATA with `raw` (dot-stuffed); returns the RCPT replies and the
    /// final replies (one per accepted recipient in LMTP).
    fn transaction(&mut self, from: &str, to: &[&str], raw: &str, lmtp: bool) -> (Vec<String>, Vec<String>) {
        let mail = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert!(mail.starts_with("250"), "{mail}");
        let rcpts: Vec<String> = to.iter().map(|t| self.cmd(&format!("RCPT TO:<{t}>"))).collect();
        let accepted = rcpts.iter().filter(|r| r.starts_with("250")).count();
        if accepted == 0 {
            self.cmd("RSET");
            return (rcpts, vec![]);
        }
        let data = self.cmd("DATA");
        assert!(data.starts_with("354"), "{data}");
        self.send(&dot_stuff(raw));
        self.send(".\r\n");
        let finals = (0..if lmtp { accepted } else { 1 }).map(|_| self.reply().unwrap()).collect();
        (rcpts, finals)
    }
}

fn dot_stuff(raw: &str) -> String {
    raw.split_inclusive("\r\n").map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_string() }).collect()
}

/// How many stored messages carry `message_id`.
async fn stored_count(db: &TestDb, message_id: &str) -> i64 {
    let store = db.store().await;
    sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE message_id = $1")
        .bind(message_id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn relayed_mail_is_stored_linked_and_the_synced_sent_copy_is_the_same_message() {
    let signer = Signer::new();
    let dns = Dns::start(&signer.records());
    for db in TestDb::both() {
        let tag = db.label();
        let dovecot = Dovecot::start(&[(ALICE, "pw-alice")]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_config(d, db.url(), "");
        let drop_port =
            bcc_drop_config(d, &format!("dns_servers = \"127.0.0.1:{}\"\ndomain = \"drop.test\"", dns.port));
        let account = add_account(d, db.url(), &dovecot, ALICE, "pw-alice");
        ok(mailsync(d, db.url()).args(["user-add-address", "--user", ALICE, ALICE_PHONE]));
        let address = drop_address(d, db.url(), ALICE);
        assert!(address.ends_with("@drop.test"), "{address}");
        let postfix = Postfix::start_transports(&[("drop.test", format!("smtp:[127.0.0.1]:{drop_port}"))], "");
        let daemon = Daemon::start(d, db.url());
        let store = db.store().await;
        wait_initial_sync(&store, account, 2).await;
        let (_, contact) =
            daemon.api("POST", "/v1/contacts", Some(&json!({"name": "Bob", "emails": ["bob@client.test"]})));

        // Alice writes to Bob from her phone, BCC to her drop address, through Postfix.
        let message_id = format!("phone-1-{tag}@phone.test");
        let raw = signer.sign(&phone_message("Bob <bob@client.test>", "Quote", &message_id));
        let raw_path = d.join("message.eml");
        std::fs::write(&raw_path, &raw).unwrap();
        let swaks = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", postfix.smtp_port), "--from", ALICE_PHONE, "--to", &address])
            .arg("--data")
            .arg(&raw_path)
            .output()
            .unwrap();
        assert!(swaks.status.success(), "{tag}: swaks: {}", String::from_utf8_lossy(&swaks.stdout));
        let delivery = wait_delivery(&daemon, 1);
        assert_eq!(delivery["outcome"], "imported", "{tag}: {delivery}\n{}\n{}", postfix.log(), daemon.log());
        assert_eq!(delivery["message_id"], message_id);
        assert_eq!(delivery["user"], ALICE);
        let stored = delivery["stored_message"].as_i64().unwrap();

        // Linked to Bob's contact; the drop address is not a participant.
        let (_, linked) = daemon.api("GET", &format!("/v1/messages?contact={}", contact["id"]), None);
        assert_eq!(linked[0]["message_id"], message_id, "{tag}: {linked}");
        assert_eq!(linked[0]["source"], "bcc_drop");
        assert_eq!(linked[0]["to"], json!(["bob@client.test"]), "{tag}: {linked}");
        assert!(!linked.to_string().contains("@drop.test"), "{tag}: {linked}");

        // The same message appears in Alice's synced Sent folder: still one message.
        dovecot.write_maildir(ALICE, ".Sent", std::slice::from_ref(&raw));
        wait_in_sent_folder(&store, stored).await;
        assert_eq!(stored_count(&db, &message_id).await, 1, "{tag}");
    }
}

#[tokio::test]
async fn bad_mail_is_refused_with_the_right_code_nothing_stored_and_the_listener_keeps_serving() {
    let signer = Signer::new();
    let dns = Dns::start(&signer.records());
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, db.url(), "");
    let certs = certs();
    let port = bcc_drop_config(
        d,
        &format!(
            "dns_servers = \"127.0.0.1:{}\"\ndomain = \"drop.test\"\nmax_message_bytes = 100000\nmax_recipients = 2\n\
             idle_timeout_secs = 2\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            dns.port,
            certs.cert.display(),
            certs.key.display()
        ),
    );
    let address = setup_user(d, db.url(), ALICE, ALICE_PHONE);
    let daemon = Daemon::start(d, db.url());
    let mut client = Client::connect(port);
    let ehlo = client.cmd("EHLO phone.test");
    for capability in ["PIPELINING", "8BITMIME", "SIZE 100000", "STARTTLS"] {
        assert!(ehlo.contains(capability), "{capability} not in {ehlo}");
    }

    // Unknown token and a foreign domain: refused at RCPT.
    let (rcpts, _) = client.transaction(ALICE_PHONE, &["nosuchtoken@drop.test", "x@elsewhere.test"], "", false);
    assert!(rcpts[0].starts_with("550 5.1.1"), "{rcpts:?}");
    assert!(rcpts[1].starts_with("550 5.7.1"), "{rcpts:?}");

    // Too many recipients: the third RCPT of one message is deferred (452).
    let (rcpts, finals) = client.transaction(
        ALICE_PHONE,
        &[&address, &address, &address],
        &signer.sign(&phone_message("bob@client.test", "Three", "three@phone.test")),
        false,
    );
    assert!(rcpts[2].starts_with("452 4.5.3"), "{rcpts:?}");
    assert!(finals[0].starts_with("250"), "two RCPTs of one mailbox, stored once: {finals:?}");

    // Spoofed From (signed by the phone's domain, but not Alice's address), spoofed
    // envelope sender, failed DKIM (body changed after signing), no signature at all.
    let spoofed = signer.sign(&message("ceo@phone.test", "bob@client.test", "Wire money", "spoof@phone.test", "pay"));
    let (_, finals) = client.transaction(ALICE_PHONE, &[&address], &spoofed, false);
    assert!(finals[0].starts_with("550 5.7.1") && finals[0].contains("ceo@phone.test"), "{finals:?}");
    let (_, finals) = client.transaction(
        "mallory@evil.test",
        &[&address],
        &signer.sign(&phone_message("bob@client.test", "Env", "env@phone.test")),
        false,
    );
    assert!(finals[0].starts_with("550 5.7.1") && finals[0].contains("envelope sender"), "{finals:?}");
    let tampered = signer
        .sign(&phone_message("bob@client.test", "Tampered", "tampered@phone.test"))
        .replace("Sent from my phone", "Sent from my PHONE");
    let (_, finals) = client.transaction(ALICE_PHONE, &[&address], &tampered, false);
    assert!(finals[0].starts_with("550 5.7.1") && finals[0].contains("body hash does not match"), "{finals:?}");
    let (_, finals) = client.transaction(
        ALICE_PHONE,
        &[&address],
        &phone_message("bob@client.test", "Unsigned", "unsigned@phone.test"),
        false,
    );
    assert!(finals[0].starts_with("550 5.7.1") && finals[0].contains("not authenticated"), "{finals:?}");

    // Oversized: announced (SIZE) and actual.
    let reply = client.cmd("MAIL FROM:<alice@phone.test> SIZE=200000");
    assert!(reply.starts_with("552"), "{reply}");
    let big = signer.sign(&message(
        ALICE_PHONE,
        "bob@client.test",
        "Big",
        "big@phone.test",
        &"0123456789abcdef\r\n".repeat(10_000),
    ));
    let (_, finals) = client.transaction(ALICE_PHONE, &[&address], &big, false);
    assert!(finals[0].starts_with("552"), "{finals:?}");

    // Malformed commands.
    for (line, code) in
        [("FROB", "500"), ("RCPT TO:<x@drop.test>", "503"), ("MAIL FROM:<no-bracket", "501"), ("DATA", "503")]
    {
        let reply = client.cmd(line);
        assert!(reply.starts_with(code), "{line}: {reply}");
    }
    let reply = client.cmd(&format!("NOOP {}", "x".repeat(5000)));
    assert!(reply.starts_with("500"), "overlong line: {reply}");
    assert!(client.cmd("QUIT").starts_with("221"));

    // A client that stalls mid-DATA is cut off after the idle timeout.
    let mut stalled = Client::connect(port);
    stalled.cmd("EHLO phone.test");
    stalled.cmd(&format!("MAIL FROM:<{ALICE_PHONE}>"));
    stalled.cmd(&format!("RCPT TO:<{address}>"));
    stalled.cmd("DATA");
    stalled.send("From: alice@phone.test\r\nSubject: half");
    let goodbye = stalled.reply().unwrap();
    assert!(goodbye.starts_with("421 4.4.2"), "{goodbye}");
    assert!(stalled.reply().is_err(), "the connection is closed after 421");

    // Still serving: a good message over STARTTLS (swaks) is stored.
    let good = signer.sign(&phone_message("bob@client.test", "Good", "good@phone.test"));
    std::fs::write(d.join("good.eml"), &good).unwrap();
    let swaks = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--tls", "--from", ALICE_PHONE, "--to", &address])
        .arg("--data")
        .arg(d.join("good.eml"))
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&swaks.stdout);
    assert!(swaks.status.success(), "swaks: {transcript}");
    assert!(transcript.contains("STARTTLS") && transcript.contains("250 2.0.0 stored as message"), "{transcript}");

    // Exactly the two good messages are stored; every refusal after DATA is recorded.
    let ids: Vec<String> = [
        "three@phone.test",
        "good@phone.test",
        "spoof@phone.test",
        "env@phone.test",
        "tampered@phone.test",
        "unsigned@phone.test",
        "big@phone.test",
    ]
    .iter()
    .map(|m| m.to_string())
    .collect();
    let mut counts = Vec::new();
    for id in &ids {
        counts.push(stored_count(&db, id).await);
    }
    assert_eq!(counts, [1, 1, 0, 0, 0, 0, 0], "{ids:?}");
    let outcomes: Vec<(String, String)> = deliveries(&daemon)
        .iter()
        .rev()
        .map(|d| (d["message_id"].as_str().unwrap().to_string(), d["outcome"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("three@phone.test", "imported"),
        ("spoof@phone.test", "refused"),
        ("env@phone.test", "refused"),
        ("tampered@phone.test", "refused"),
        ("unsigned@phone.test", "refused"),
        ("good@phone.test", "imported"),
    ]
    .iter()
    .map(|(m, o)| (m.to_string(), o.to_string()))
    .collect();
    assert_eq!(outcomes, expected);
    let cli = ok(mailsync(d, db.url()).args(["bcc-drops", "--user", ALICE]));
    assert!(cli.contains("refused") && cli.contains("is not one of"), "{cli}");
    let metrics = daemon.metrics();
    assert_eq!(metric(&metrics, "mailsync_bcc_drop_messages{outcome=\"refused\"}"), Some(4.0), "{metrics}");
    assert_eq!(metric(&metrics, "mailsync_bcc_drop_messages{outcome=\"imported\"}"), Some(2.0), "{metrics}");
}

#[tokio::test]
async fn killed_between_data_and_reply_the_client_sees_no_250_and_a_retry_stores_once() {
    let signer = Signer::new();
    let dns = Dns::start(&signer.records());
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, db.url(), "");
    let port = bcc_drop_config(d, &format!("dns_servers = \"127.0.0.1:{}\"\ndomain = \"drop.test\"", dns.port));
    let address = setup_user(d, db.url(), ALICE, ALICE_PHONE);
    let raw = signer.sign(&phone_message("bob@client.test", "Crash", "crash@phone.test"));
    let mut daemon = Daemon::start(d, db.url());

    // Hold SQLite's write lock so the daemon stops between the end of DATA and its commit.
    let path = db.url().trim_start_matches("sqlite://").to_string();
    let mut blocker = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{path}")).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut blocker).await.unwrap();
    let mut client = Client::connect(port);
    client.cmd("EHLO phone.test");
    client.cmd(&format!("MAIL FROM:<{ALICE_PHONE}>"));
    client.cmd(&format!("RCPT TO:<{address}>"));
    client.cmd("DATA");
    client.send(&dot_stuff(&raw));
    client.send(".\r\n");
    poll(DROP_DEADLINE, "the daemon received the message", || {
        daemon.log().contains("BCC drop: message received").then_some(())
    });
    kill_hard(&mut daemon);
    let reply = client.reply();
    assert!(reply.is_err(), "no reply after kill -9, got {reply:?}");
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    drop(blocker);

    // The MTA retries: stored once; a second retry (as after a lost 250) is a duplicate.
    let daemon = Daemon::start(d, db.url());
    let reply = smtp_transaction(port, false, ALICE_PHONE, &[&address], &raw).unwrap();
    assert!(reply.starts_with("250 2.0.0 stored as message"), "{reply}");
    let again = smtp_transaction(port, false, ALICE_PHONE, &[&address], &raw).unwrap();
    assert!(again.starts_with("250 2.0.0 already stored"), "{again}");
    assert_eq!(stored_count(&db, "crash@phone.test").await, 1);
    let outcomes: Vec<String> =
        deliveries(&daemon).iter().map(|d| d["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, ["duplicate", "imported"]);
}

/// `kill -9` of the daemon.
fn kill_hard(daemon: &mut Daemon) {
    let _ = Command::new("kill").arg("-KILL").arg(daemon.child.id().to_string()).status();
    poll(DROP_DEADLINE, "the daemon to die", || daemon.child.try_wait().ok().flatten());
}

#[tokio::test]
async fn lmtp_answers_each_recipient_and_a_trusted_mta_header_decides_authentication() {
    let db = TestDb::postgres();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, db.url(), "");
    let port = bcc_drop_config(
        d,
        "protocol = \"lmtp\"\ndomain = \"drop.test\"\ntrusted_authserv_id = \"mx.test\"\nmax_sessions = 1",
    );
    let alice_drop = setup_user(d, db.url(), ALICE, ALICE_PHONE);
    let carol_drop = setup_user(d, db.url(), "carol@example.test", "");
    let _daemon = Daemon::start(d, db.url());
    let mut client = Client::connect(port);
    // One session at a time: a second connection is turned away.
    let mut second = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let mut busy = String::new();
    second.read_line(&mut busy).unwrap();
    assert!(busy.starts_with("421 4.3.2"), "{busy}");
    assert!(client.cmd("EHLO phone.test").starts_with("500"), "LMTP wants LHLO");
    assert!(client.cmd("LHLO mx.test").starts_with("250"));

    // The trusted MTA vouches for phone.test: Alice's copy is stored, Carol's refused
    // (not her address), each with its own reply.
    let vouched = format!(
        "Authentication-Results: mx.test; dkim=pass header.d=phone.test; spf=none\r\n{}",
        phone_message("bob@client.test", "Vouched", "vouched@phone.test")
    );
    let (_, finals) = client.transaction(ALICE_PHONE, &[&alice_drop, &carol_drop], &vouched, true);
    assert_eq!(finals.len(), 2, "{finals:?}");
    assert!(finals[0].starts_with("250 2.0.0 stored"), "{finals:?}");
    assert!(finals[1].starts_with("550 5.7.1"), "{finals:?}");

    // A header from anyone else first (the trusted MTA did not add one): refused.
    let forged = format!(
        "Authentication-Results: evil.test; dkim=pass header.d=phone.test\r\n\
         Authentication-Results: mx.test; dkim=pass header.d=phone.test\r\n{}",
        phone_message("bob@client.test", "Forged", "forged@phone.test")
    );
    let (_, finals) = client.transaction(ALICE_PHONE, &[&alice_drop], &forged, true);
    assert!(finals[0].starts_with("550 5.7.1") && finals[0].contains("evil.test"), "{finals:?}");
    assert!(client.cmd("QUIT").starts_with("221"));
    // The session's slot is free again.
    poll(DROP_DEADLINE, "a new session after QUIT", || {
        let mut reader = BufReader::new(TcpStream::connect(("127.0.0.1", port)).ok()?);
        let mut greeting = String::new();
        reader.read_line(&mut greeting).ok()?;
        greeting.starts_with("220").then_some(())
    });
    assert_eq!(stored_count(&db, "vouched@phone.test").await, 1);
    assert_eq!(stored_count(&db, "forged@phone.test").await, 0);
}
