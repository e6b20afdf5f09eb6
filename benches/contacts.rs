//! Contacts sync against Radicale: the first sync and a no-change re-sync of an address
//! book of N contacts, side by side with vdirsyncer (CardDAV to a local vdir) reading the
//! same address book in the same run.
//!
//! mailsync's first sync imports every card as a CRM contact (linking state, source tag,
//! addresses queued for mail linking); its re-sync must send no write to the server
//! (counted in Radicale's request log).
//!
//! `cargo bench --bench contacts [-- --sizes 10000,50000 --backends sqlite,postgres]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const USER: &str = "alice@bench.example";

fn main() {
    let mut sizes = vec![10_000usize, 50_000];
    let mut backends = vec!["sqlite".to_string(), "postgres".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sizes" => {
                sizes = args.next().expect("--sizes LIST").split(',').map(|s| s.parse().expect("a number")).collect()
            }
            "--backends" => backends = args.next().expect("--backends LIST").split(',').map(String::from).collect(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!("contacts  client                 first sync   re-sync   writes in re-sync");
    for &n in &sizes {
        let radicale = Radicale::start();
        let url = format!("http://127.0.0.1:{}/", radicale.port);
        // The address book, filled behind the server's back (N PUTs would take longer
        // than the benchmark), then listed once so Radicale has indexed it.
        runtime.block_on(async {
            mailsync::contacts::carddav::CardDav::connect(&url, "alice", "pw", "bench", Duration::from_secs(600))
                .await
                .expect("create book")
        });
        let folder = radicale.dir.path().join("collections/collection-root/alice/bench");
        for i in 0..n {
            let card = format!(
                "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:bench-{i}\r\nFN:Person {i}\r\nN:{i};Person;;;\r\nORG:Company {}\r\n\
                 EMAIL:person{i}@client{}.example\r\nTEL:+1 415 {:03} {:04}\r\nNOTE:imported for the benchmark\r\nEND:VCARD\r\n",
                i % 97,
                i % 13,
                200 + i / 10_000,
                i % 10_000
            );
            std::fs::write(folder.join(format!("bench-{i}.vcf")), card).expect("write card");
        }
        runtime.block_on(async {
            let dav =
                mailsync::contacts::carddav::CardDav::connect(&url, "alice", "pw", "bench", Duration::from_secs(600))
                    .await
                    .expect("connect");
            assert_eq!(dav.changes("").await.expect("listing").changed.len(), n);
        });
        let writes = || radicale_writes(&radicale);

        // The peer: vdirsyncer, CardDAV to a local directory.
        let peer_dir = tempfile::tempdir().expect("tempdir");
        let p = peer_dir.path();
        std::fs::create_dir_all(p.join("vdir")).expect("vdir");
        std::fs::write(
            p.join("config"),
            format!(
                "[general]\nstatus_path = \"{s}/status\"\n[pair bench]\na = \"remote\"\nb = \"local\"\ncollections = [\"bench\"]\n\
                 [storage remote]\ntype = \"carddav\"\nurl = \"{url}\"\nusername = \"alice\"\npassword = \"pw\"\n\
                 [storage local]\ntype = \"filesystem\"\npath = \"{s}/vdir\"\nfileext = \".vcf\"\n",
                s = p.display()
            ),
        )
        .expect("vdirsyncer config");
        // A peer failure is reported in the table (with the end of its debug output), not fatal.
        let vdirsyncer = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("vdirsyncer")
                .arg("-vdebug")
                .arg("-c")
                .arg(p.join("config"))
                .args(args)
                .output()
                .expect("vdirsyncer installed");
            if out.status.success() {
                return Ok(());
            }
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().filter(|l| !l.trim().is_empty()).take(3).collect();
            Err(tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        };
        // discover asks before creating the local collection: say yes.
        let discover = Command::new("sh")
            .arg("-c")
            .arg(format!("yes | vdirsyncer -c '{}' discover bench", p.join("config").display()))
            .output()
            .expect("vdirsyncer installed");
        assert!(discover.status.success(), "vdirsyncer discover: {}", String::from_utf8_lossy(&discover.stderr));
        let timed = |args: &[&str]| {
            let start = Instant::now();
            vdirsyncer(args).map(|()| start.elapsed().as_secs_f64())
        };
        match timed(&["sync"]) {
            Ok(first) => {
                let before = writes();
                let again = timed(&["sync"]).unwrap_or(f64::NAN);
                println!("{n:>8}  {:<22} {first:>9.2} s {again:>7.2} s {:>10}", "vdirsyncer (peer)", writes() - before);
            }
            Err(e) => println!("{n:>8}  {:<22} failed: {e}", "vdirsyncer (peer)"),
        }

        for backend in &backends {
            let db = if backend == "sqlite" { TestDb::sqlite() } else { TestDb::postgres() };
            let dir = tempfile::tempdir().expect("tempdir");
            let d = dir.path();
            write_config(d, db.url(), "");
            std::fs::write(d.join("pw"), "pw").expect("pw");
            ok(mailsync(d, db.url())
                .args(["account", "add", "--email", USER, "--imap-host", "127.0.0.1", "--tls", "starttls"])
                .args(["--imap-port", &free_port().to_string(), "--password-file", "pw"]));
            ok(mailsync(d, db.url())
                .args([
                    "contacts",
                    "configure",
                    "--user",
                    USER,
                    "--url",
                    &url,
                    "--username",
                    "alice",
                    "--password-file",
                    "pw",
                ])
                .args(["--address-book", "bench"]));
            let sync = || {
                let out = ok(mailsync(d, db.url()).args(["contacts", "sync", "--user", USER, "--json"]));
                serde_json::from_str::<serde_json::Value>(&out).expect("report")
            };
            let start = Instant::now();
            let report = sync();
            let first = start.elapsed().as_secs_f64();
            assert_eq!(report["created_in_crm"], n, "{report}");
            let before = writes();
            let start = Instant::now();
            let report = sync();
            let again = start.elapsed().as_secs_f64();
            assert_eq!(report["updated_remotely"], 0, "{report}");
            println!(
                "{n:>8}  {:<22} {first:>9.2} s {again:>7.2} s {:>10}",
                format!("mailsync ({backend})"),
                writes() - before
            );
        }
    }
}

/// PUT, DELETE, MKCOL and PROPPATCH requests Radicale has logged so far.
fn radicale_writes(radicale: &Radicale) -> usize {
    let log = std::fs::read_to_string(radicale.dir.path().join("radicale.log")).unwrap_or_default();
    log.lines()
        .filter(|l| {
            ["PUT request", "DELETE request", "MKCOL request", "PROPPATCH request"].iter().any(|w| l.contains(w))
        })
        .count()
}
