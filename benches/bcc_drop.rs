//! BCC-drop intake: messages per second accepted and durably stored by the listener,
//! side by side with Postfix's `smtp-sink` (which accepts and discards) receiving the
//! same load from `smtp-source` in the same run.
//!
//! mailsync's figure includes everything an accepted message costs: the SMTP session,
//! the token lookup, SPF (DNS through dnsmasq) and alignment, parsing, storing,
//! threading and linking, and the commit before the 250.
//!
//! `cargo bench --bench bcc_drop [-- --messages 2000 --sessions 16 --backends sqlite,postgres]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use common::*;

const USER: &str = "rep@bench.example";
const PHONE: &str = "rep@phone.test";

fn main() {
    let mut messages = 2000usize;
    let mut sessions = 16usize;
    let mut backends = vec!["sqlite".to_string(), "postgres".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => messages = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--sessions" => sessions = args.next().and_then(|v| v.parse().ok()).expect("--sessions N"),
            "--backends" => backends = args.next().expect("--backends LIST").split(',').map(String::from).collect(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // Messages of about 4 KB, as in the outbound benchmark.
    let size = 4096;
    let source = |port: u16, to: &str| {
        let started = Instant::now();
        let status = Command::new("smtp-source")
            .args([
                "-s",
                &sessions.to_string(),
                "-m",
                &messages.to_string(),
                "-l",
                &size.to_string(),
                "-f",
                PHONE,
                "-t",
                to,
            ])
            .arg(format!("127.0.0.1:{port}"))
            .status()
            .expect("smtp-source (postfix) installed");
        assert!(status.success(), "smtp-source failed");
        messages as f64 / started.elapsed().as_secs_f64()
    };

    let sink = SmtpSink::start(&[]);
    let peer = source(sink.port, "someone@drop.test");
    drop(sink);
    println!("receiver                    messages   seconds   msg/s   vs smtp-sink");
    println!("{:<27} {messages:>8} {:>9.2} {peer:>7.0} {:>+8.0}%", "smtp-sink (peer)", messages as f64 / peer, 0.0);

    // phone.test authorizes 127.0.0.1 by SPF, so every message passes real verification.
    let dns = Dns::start(&[("phone.test", "v=spf1 ip4:127.0.0.1 -all")]);
    for backend in &backends {
        let db = if backend == "sqlite" { TestDb::sqlite() } else { TestDb::postgres() };
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write_config(d, db.url(), "");
        let port = bcc_drop_config(
            d,
            &format!("domain = \"drop.test\"\ndns_servers = \"127.0.0.1:{}\"\nmax_sessions = 1000", dns.port),
        );
        std::fs::write(d.join("pw"), "x").expect("pw");
        ok(mailsync(d, db.url())
            .args(["account", "add", "--email", USER, "--imap-host", "127.0.0.1", "--tls", "starttls"])
            .args(["--imap-port", &free_port().to_string(), "--password-file", "pw"]));
        ok(mailsync(d, db.url()).args(["user-add-address", "--user", USER, PHONE]));
        let address = ok(mailsync(d, db.url()).args(["bcc-address", "--user", USER])).trim().to_string();
        let daemon = Daemon::start(d, db.url());
        let rate = source(port, &address);
        let store = runtime.block_on(db.store());
        let imported: i64 = runtime.block_on(async {
            sqlx::query_scalar("SELECT COUNT(*) FROM drop_deliveries WHERE outcome = 'imported'")
                .fetch_one(store.pool())
                .await
                .expect("count")
        });
        assert_eq!(imported as usize, messages, "every message acknowledged is stored:\n{}", daemon.log());
        drop(daemon);
        println!(
            "{:<27} {messages:>8} {:>9.2} {rate:>7.0} {:>+8.0}%",
            format!("mailsync ({backend})"),
            messages as f64 / rate,
            (rate / peer - 1.0) * 100.0
        );
    }
}
