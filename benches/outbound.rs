//! Outbound throughput: messages per second from the outbox through the relay into
//! Postfix's `smtp-sink`, side by side with Postfix's `smtp-source` sending the same
//! number of messages of the same size to an identical sink, in the same run.
//!
//! mailsync's figure includes everything a sent message costs it: claiming the row,
//! the SMTP transaction, storing, threading and linking the message, and the commit.
//!
//! `cargo bench --bench outbound [-- --messages 2000 --backends sqlite,postgres]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mailsync::config::Config;
use mailsync::outbound::compose::OutgoingInput;

const USER: &str = "rep@bench.example";

fn main() {
    let mut messages = 2000usize;
    let mut backends = vec!["sqlite".to_string(), "postgres".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => messages = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--backends" => backends = args.next().expect("--backends LIST").split(',').map(String::from).collect(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let body = "Hello, this is a benchmark message of about four kilobytes.\n".repeat(64);

    // The peer: smtp-source, 16 parallel sessions (as many as mailsync's sender uses).
    let sink = SmtpSink::start(&[]);
    let started = Instant::now();
    let status = Command::new("smtp-source")
        .args([
            "-s",
            "16",
            "-m",
            &messages.to_string(),
            "-l",
            &body.len().to_string(),
            "-f",
            USER,
            "-t",
            "ann@client.example",
        ])
        .arg(format!("127.0.0.1:{}", sink.port))
        .status()
        .expect("smtp-source (postfix) installed");
    assert!(status.success(), "smtp-source failed");
    let peer = messages as f64 / started.elapsed().as_secs_f64();
    drop(sink);

    println!("sender                      messages   seconds   msg/s   vs smtp-source");
    println!("{:<27} {messages:>8} {:>9.2} {peer:>7.0} {:>+8.0}%", "smtp-source (peer)", messages as f64 / peer, 0.0);
    for backend in &backends {
        let db = if backend == "sqlite" { TestDb::sqlite() } else { TestDb::postgres() };
        let sink = SmtpSink::start(&[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write_config(
            d,
            db.url(),
            &format!(
                "\n[smtp_relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n[outbound]\npoll_ms = 100\n\
                 daily_limit_per_user = 1000000\ndaily_limit_per_org = 1000000\n",
                sink.port
            ),
        );
        std::fs::write(d.join("pw"), "x").expect("pw");
        ok(mailsync(d, db.url())
            .args(["account", "add", "--email", USER, "--imap-host", "127.0.0.1", "--tls", "starttls"])
            .args(["--imap-port", &free_port().to_string(), "--password-file", "pw"]));
        let config = Config::load(Some(&d.join("mailsync.toml"))).expect("config");
        let store = runtime.block_on(db.store());
        // Queue everything first, then start the daemon: the figure is the sender's alone.
        runtime.block_on(async {
            for i in 0..messages {
                let input = OutgoingInput {
                    user: USER.into(),
                    to: vec!["ann@client.example".into()],
                    subject: format!("bench {i}"),
                    text: Some(body.clone()),
                    ..OutgoingInput::default()
                };
                mailsync::outbound::enqueue(&store, &input, &config).await.expect("enqueue");
            }
        });
        let started = Instant::now();
        let daemon = Daemon::start(d, db.url());
        runtime.block_on(poll_async(Duration::from_secs(600), "every message sent", || async {
            let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'sent'")
                .fetch_one(store.pool())
                .await
                .ok()?;
            (sent as usize == messages).then_some(())
        }));
        let rate = messages as f64 / started.elapsed().as_secs_f64();
        drop(daemon);
        println!(
            "{:<27} {messages:>8} {:>9.2} {rate:>7.0} {:>+8.0}%",
            format!("mailsync ({backend})"),
            messages as f64 / rate,
            (rate / peer - 1.0) * 100.0
        );
    }
}
