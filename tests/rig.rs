//! The test rig talks to real servers: these tests prove each one is there and behaves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::time::Duration;

use common::*;
use futures_util::TryStreamExt;
use mailsync::net::{connect_tcp, tls};

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn imaps_login_trusts_only_the_test_ca() {
    let dovecot = Dovecot::start(&[("alice@example.com", "secret1")]);

    // Without the test CA the certificate is refused, and classified as such.
    let tcp = connect_tcp("localhost", dovecot.imaps_port, TIMEOUT).await.unwrap();
    let untrusting = tls::connector(None).unwrap();
    let err = tls::handshake(&untrusting, "localhost", tcp).await.unwrap_err();
    assert!(matches!(err, tls::TlsError::Certificate(_)), "{err}");

    // With it, the handshake and a LOGIN succeed and INBOX and Sent are listed.
    let tcp = connect_tcp("localhost", dovecot.imaps_port, TIMEOUT).await.unwrap();
    let trusting = tls::connector(Some(&certs().ca)).unwrap();
    let stream = tls::handshake(&trusting, "localhost", tcp).await.unwrap();
    let mut client = async_imap::Client::new(stream);
    client.read_response().await.unwrap().expect("greeting");
    let mut session = client.login("alice@example.com", "secret1").await.map_err(|(e, _)| e).unwrap();
    let names: Vec<_> = session.list(None, Some("*")).await.unwrap().try_collect().await.unwrap();
    let names: Vec<&str> = names.iter().map(|n| n.name()).collect();
    assert!(names.contains(&"INBOX") && names.contains(&"Sent"), "{names:?}");
    session.logout().await.unwrap();

    // A wrong password is refused by the same server.
    let tcp = connect_tcp("localhost", dovecot.imaps_port, TIMEOUT).await.unwrap();
    let stream = tls::handshake(&trusting, "localhost", tcp).await.unwrap();
    let mut client = async_imap::Client::new(stream);
    client.read_response().await.unwrap().expect("greeting");
    assert!(client.login("alice@example.com", "wrong").await.is_err());
}

#[test]
fn postfix_relays_into_dovecot() {
    let dovecot = Dovecot::start(&[("bob@crm.example", "pw")]);
    let postfix = Postfix::start(&[("crm.example", dovecot.lmtp_port)]);
    let raw = message("carol@example.net", "bob@crm.example", "relayed", "relay-1@example.net", "hello");
    smtp_transaction(postfix.smtp_port, false, "carol@example.net", &["bob@crm.example"], &raw)
        .unwrap_or_else(|e| panic!("postfix refused: {e}\n{}", postfix.log()));
    poll(Duration::from_secs(30), "the relayed message in bob's INBOX", || {
        (dovecot.maildir_count("bob@crm.example", "") == 1).then_some(())
    });
    // Dovecot writes its log line after the mail file: wait for it too, or this races.
    poll(Duration::from_secs(30), "Dovecot's log of the delivery", || {
        dovecot.log().contains("msgid=<relay-1@example.net>: saved mail to INBOX").then_some(())
    });
}

#[test]
fn smtp_sink_accepts_and_lmtp_delivers() {
    let sink = SmtpSink::start(&[]);
    let raw = message("a@example.net", "b@example.org", "sunk", "sink-1@example.net", "x");
    let reply = smtp_transaction(sink.port, false, "a@example.net", &["b@example.org"], &raw).unwrap();
    assert!(reply.starts_with("250"), "{reply}");

    let dovecot = Dovecot::start(&[("dan@example.com", "pw")]);
    dovecot.deliver("dan@example.com", &message("x@example.net", "dan@example.com", "s", "lmtp-1@x", "b"));
    assert_eq!(dovecot.maildir_count("dan@example.com", ""), 1);
}

#[test]
fn radicale_serves_carddav() {
    let radicale = Radicale::start();
    let port = radicale.port;
    let book = "/alice/contacts/";
    let mkcol = r#"<?xml version="1.0"?><mkcol xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><set><prop><resourcetype><collection/><C:addressbook/></resourcetype></prop></set></mkcol>"#;
    let (status, body) = dav(port, "MKCOL", book, mkcol, &[]);
    assert_eq!(status, 201, "{body}");
    let vcard = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:ann-1\r\nFN:Ann Example\r\nEMAIL:ann@example.com\r\nEND:VCARD\r\n";
    let (status, body) =
        dav(port, "PUT", "/alice/contacts/ann-1.vcf", vcard, &["Content-Type: text/vcard", "If-None-Match: *"]);
    assert_eq!(status, 201, "{body}");
    let (status, body) = dav(port, "PROPFIND", book, "", &["Depth: 1"]);
    assert_eq!(status, 207, "{body}");
    assert!(body.contains("ann-1.vcf"), "{body}");
    // The precondition holds: a second create of the same resource is refused.
    let (status, _) =
        dav(port, "PUT", "/alice/contacts/ann-1.vcf", vcard, &["Content-Type: text/vcard", "If-None-Match: *"]);
    assert_eq!(status, 412);
}

fn dav(port: u16, method: &str, path: &str, body: &str, headers: &[&str]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Basic YWxpY2U6cHc=\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req += h;
        req += "\r\n";
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp)
}

#[tokio::test]
async fn migrations_run_on_sqlite_and_postgres() {
    for db in TestDb::both() {
        let store = db.store().await;
        // Idempotent: a second run applies nothing and fails nothing.
        store.migrate().await.unwrap_or_else(|e| panic!("{}: {e}", db.label()));
        store.ping().await.unwrap();
        let tables: i64 = sqlx::query_scalar(match store.backend() {
            mailsync::store::Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('messages', 'message_locations', 'outbox', 'contact_sync_items')"
            }
            mailsync::store::Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name IN ('messages', 'message_locations', 'outbox', 'contact_sync_items')"
            }
        })
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(tables, 4, "{}", db.label());
        store.close().await;
    }
}
