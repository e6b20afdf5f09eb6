//! Benchmarks against peers, measured side by side in one run on one machine:
//!
//! 1. Initial sync of a generated mailbox over IMAPS from a local Dovecot into SQLite,
//!    against `mbsync` (isync, `FSync no`) pulling the same mailbox.
//! 2. Restart with nothing new: time and bytes per folder, at 1,000 messages and at full size.
//! 3. Push latency, LMTP delivery to stored row, with 1, 100 and 1,000 accounts idling.
//! 4. Idle cost at the largest account count: RSS per account, CPU while idle.
//! 5. Figures 1 and 3 on PostgreSQL.
//!
//! Run with `bench/run` (installs the peers) or `cargo bench --bench peers -- --help`.
//! Writes `bench/results/latest.json` and `bench/results/latest.png`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

#[path = "../tests/common/mod.rs"]
mod common;
mod corpus;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const USER: &str = "rep@bench.example";
const PASSWORD: &str = "bench-pw";

/// Dovecot tuned for thousands of connections: no raw log (it would double the disk
/// traffic), high process and client limits.
///
/// imap-hibernate is configured but off (`imap_hibernate_timeout = 0`): with Dovecot
/// 2.3.19 here, hibernated IDLE clients were not woken by new mail (deliveries sat unseen
/// for over a minute; no error logged), which would measure Dovecot's fault, not ours.
/// Without it Dovecot keeps one imap process per connection (about 5 MB each), which
/// still fits 2,000 connections on this machine.
const BENCH_DOVECOT: &str = r#"
protocol imap {
  rawlog_dir =
}
imap_hibernate_timeout = 0
default_process_limit = 6000
default_client_limit = 20000
default_vsz_limit = 0
service imap {
  process_limit = 6000
  client_limit = 1
  # imap-hibernate (running as the internal user) hands clients back through this.
  unix_listener imap-master {
    mode = 0666
  }
}
service imap-hibernate {
  # It watches the mailboxes for new mail, so it runs as the mail user.
  user = nobody
  client_limit = 20000
  unix_listener imap-hibernate {
    mode = 0666
  }
}
service imap-login {
  service_count = 0
  client_limit = 20000
  process_min_avail = 2
}
service auth {
  client_limit = 30000
}
service anvil {
  client_limit = 30000
}
mail_max_userip_connections = 10000
"#;

struct Args {
    messages: usize,
    figures: Vec<u32>,
    accounts: Vec<usize>,
    runs: usize,
    out: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args {
        messages: 50_000,
        figures: vec![1, 2, 3, 4, 5],
        accounts: vec![1, 100, 1000],
        runs: 1,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/results"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--messages" => args.messages = value().parse().unwrap_or_else(|_| usage("--messages N")),
            "--figures" => args.figures = list(&value()),
            "--accounts" => args.accounts = list(&value()),
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| usage("--runs N")),
            "--out" => args.out = PathBuf::from(value()),
            "--bench" => {}
            "--help" | "-h" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',').map(|x| x.trim().parse().unwrap_or_else(|_| usage(&format!("bad list {s}")))).collect()
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: cargo bench --bench peers -- [--messages 50000] [--figures 1,2,3,4,5] \
         [--accounts 1,100,1000] [--runs 1] [--out bench/results]"
    );
    std::process::exit(2)
}

/// One line of the results table.
#[derive(Debug, Clone)]
struct Row {
    figure: String,
    metric: String,
    mailsync: f64,
    peer: Option<(String, f64)>,
    unit: &'static str,
    goal: String,
    met: Option<bool>,
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut rows = Vec::new();
    let wants = |f: u32| args.figures.contains(&f);
    if wants(1) || wants(2) || wants(5) {
        runtime.block_on(initial_sync_figures(&args, &mut rows));
    }
    if wants(3) || wants(4) {
        runtime.block_on(push_figures(&args, &mut rows, "sqlite"));
        if wants(5) {
            runtime.block_on(push_figures(&args, &mut rows, "postgres"));
        }
    }
    report(&args, &rows);
}

// -----------------------------------------------------------------------------------------
// Figures 1, 2 and 5

async fn initial_sync_figures(args: &Args, rows: &mut Vec<Row>) {
    let mut dovecot = Dovecot::start_with(&[(USER, PASSWORD), ("small@bench.example", PASSWORD)], BENCH_DOVECOT);
    let started = Instant::now();
    let corpus = corpus::generate(USER, args.messages, 42);
    dovecot.write_maildir(USER, "", &corpus.inbox);
    dovecot.write_maildir(USER, ".Sent", &corpus.sent);
    let small = corpus::generate("small@bench.example", 1000, 7);
    dovecot.write_maildir("small@bench.example", "", &small.inbox);
    dovecot.write_maildir("small@bench.example", ".Sent", &small.sent);
    let small_expected = (1000 - small.mass_mailings) as i64;
    drop(small);
    eprintln!(
        "corpus: {} messages ({} INBOX, {} Sent), {:.0} MB, {} with attachments, {} mass mailings, {} replies; written in {:.1?}",
        args.messages,
        corpus.inbox.len(),
        corpus.sent.len(),
        corpus.bytes as f64 / 1e6,
        corpus.with_attachments,
        corpus.mass_mailings,
        corpus.replies,
        started.elapsed()
    );
    let expected_stored = (args.messages - corpus.mass_mailings) as i64;
    drop(corpus);

    let mut mbsync_best = f64::MAX;
    let mut mbsync_rss = 0u64;
    let mut fetch_only_best = f64::MAX;
    let mut best: Vec<(&'static str, SyncRun)> = Vec::new();
    let backends: Vec<&'static str> =
        if args.figures.contains(&5) { vec!["sqlite", "postgres"] } else { vec!["sqlite"] };
    for run in 0..args.runs.max(1) {
        cold_dovecot_index(&mut dovecot, &[USER]);
        let (secs, rss) = run_mbsync(&dovecot, USER);
        eprintln!("run {run}: mbsync {secs:.2} s, peak RSS {} MB", rss / 1024);
        if secs < mbsync_best {
            mbsync_best = secs;
            mbsync_rss = rss;
        }
        cold_dovecot_index(&mut dovecot, &[USER]);
        let secs = fetch_only(&dovecot, USER).await;
        eprintln!("run {run}: fetch and parse only {secs:.2} s");
        fetch_only_best = fetch_only_best.min(secs);
        for backend in &backends {
            cold_dovecot_index(&mut dovecot, &[USER]);
            let result = run_mailsync(&dovecot, USER, backend, expected_stored).await;
            eprintln!(
                "run {run}: mailsync/{backend} {:.2} s, peak RSS {} MB (heap {} MB)",
                result.secs,
                result.peak_rss_kb / 1024,
                result.peak_anon_kb / 1024
            );
            match best.iter_mut().find(|(b, _)| b == backend) {
                Some((_, r)) if r.secs <= result.secs => {}
                Some(slot) => slot.1 = result,
                None => best.push((backend, result)),
            }
        }
    }
    rows.push(Row {
        figure: "1".into(),
        metric: format!("fetch and parse only (no store), {} messages", args.messages),
        mailsync: fetch_only_best,
        peer: Some(("mbsync".into(), mbsync_best)),
        unit: "s",
        goal: "floor of the initial sync".into(),
        met: None,
    });
    for (backend, r) in &best {
        let figure = if *backend == "sqlite" { "1" } else { "5" };
        rows.push(Row {
            figure: figure.into(),
            metric: format!("initial sync, {} messages, {backend}", args.messages),
            mailsync: r.secs,
            peer: Some(("mbsync".into(), mbsync_best)),
            unit: "s",
            goal: "<= 1/2 of mbsync".into(),
            met: Some(r.secs <= mbsync_best / 2.0),
        });
        rows.push(Row {
            figure: figure.into(),
            metric: format!("initial sync peak RSS, {backend}"),
            mailsync: r.peak_rss_kb as f64 / 1024.0,
            peer: Some(("mbsync".into(), mbsync_rss as f64 / 1024.0)),
            unit: "MB",
            goal: String::new(),
            met: None,
        });
        rows.push(Row {
            figure: figure.into(),
            metric: format!("initial sync peak heap (RssAnon, sampled), {backend}"),
            mailsync: r.peak_anon_kb as f64 / 1024.0,
            peer: None,
            unit: "MB",
            goal: String::new(),
            met: None,
        });
        rows.push(Row {
            figure: figure.into(),
            metric: format!("IMAP commands per 1,000 messages, {backend}"),
            mailsync: r.commands as f64 * 1000.0 / args.messages as f64,
            peer: None,
            unit: "cmds",
            goal: String::new(),
            met: None,
        });
    }

    if args.figures.contains(&2) {
        let full = best.iter().find(|(b, _)| *b == "sqlite").map(|(_, r)| r);
        let Some(full) = full else { return };
        let big = restart_unchanged(full).await;
        let small_run = run_mailsync(&dovecot, "small@bench.example", "sqlite", small_expected).await;
        let small_restart = restart_unchanged(&small_run).await;
        let (mbsync_again, _) = run_mbsync_again(&dovecot, USER);
        for (size, r) in [(1000usize, &small_restart), (args.messages, &big)] {
            rows.push(Row {
                figure: "2".into(),
                metric: format!("restart, nothing new, {size} messages: time per folder"),
                mailsync: r.max_folder_ms as f64 / 1000.0,
                peer: (size == args.messages).then(|| ("mbsync".to_string(), mbsync_again)),
                unit: "s",
                goal: "same at 1,000 and full size".into(),
                met: None,
            });
            rows.push(Row {
                figure: "2".into(),
                metric: format!("restart, nothing new, {size} messages: bytes per folder"),
                mailsync: r.bytes_per_folder as f64,
                peer: None,
                unit: "bytes",
                goal: "same at 1,000 and full size".into(),
                met: None,
            });
        }
        let same = small_restart.bytes_per_folder.abs_diff(big.bytes_per_folder) < 200;
        if let Some(r) = rows.iter_mut().rev().find(|r| r.figure == "2" && r.unit == "bytes") {
            r.met = Some(same);
        }
    }
}

/// The initial sync's IMAP side alone: the daemon's own connection, batch fetch and
/// parsing code on both folders at once, with the results dropped instead of stored.
/// Its time is the floor for the initial sync on this machine and server.
async fn fetch_only(dovecot: &Dovecot, user: &str) -> f64 {
    use mailsync::imap::connection::{Credential, ServerSettings, connect};
    let settings = ServerSettings {
        host: "localhost".into(),
        port: dovecot.imaps_port,
        tls: mailsync::store::TlsMode::Implicit,
        tls_connector: mailsync::net::tls::connector(Some(&certs().ca)).expect("CA file"),
        username: user.into(),
        connect_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(120),
    };
    let defaults = mailsync::config::SyncConfig::default();
    let screen = mailsync::ingest::Screen { max_recipients: defaults.max_recipients };
    let started = Instant::now();
    let folders = ["INBOX", "Sent"].map(|folder| {
        let settings = settings.clone();
        tokio::spawn(async move {
            let mut conn = connect(&settings, &Credential::Password(mailsync::secrets::Secret::new(PASSWORD)))
                .await
                .expect("login");
            conn.session.select(folder).await.expect("select");
            let mut uids: Vec<u32> = conn.session.uid_search("ALL").await.expect("search").into_iter().collect();
            uids.sort_unstable_by(|a, b| b.cmp(a));
            let mut fetched = 0;
            for chunk in uids.chunks(defaults.batch_size as usize) {
                let batch =
                    mailsync::imap::fetch::fetch_batch(&mut conn.session, chunk, &screen, defaults.max_text_bytes)
                        .await
                        .expect("fetch");
                fetched += batch.messages.len() + batch.skipped.len();
            }
            assert_eq!(fetched, uids.len(), "{folder}: every message fetched");
            let _ = conn.session.logout().await;
        })
    });
    for folder in folders {
        folder.await.expect("fetch task");
    }
    started.elapsed().as_secs_f64()
}

/// Makes Dovecot forget its index and cache (UIDs stay), so every peer starts cold.
fn cold_dovecot_index(dovecot: &mut Dovecot, users: &[&str]) {
    dovecot.stop();
    for user in users {
        for folder in ["", ".Sent"] {
            let base = dovecot.dir.path().join("mail").join(user).join(folder);
            for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("dovecot.index") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    dovecot.relaunch();
}

fn mbsync_config(dovecot: &Dovecot, user: &str, local: &Path) -> PathBuf {
    let config = local.join("mbsyncrc");
    let maildir = local.join("mail");
    std::fs::create_dir_all(&maildir).expect("mbsync dir");
    std::fs::write(
        &config,
        format!(
            "FSync no\n\nIMAPAccount bench\nHost localhost\nPort {port}\nUser {user}\nPass {PASSWORD}\n\
             SSLType IMAPS\nCertificateFile {ca}\n\nIMAPStore remote\nAccount bench\n\n\
             MaildirStore local\nPath {m}/\nInbox {m}/INBOX\nSubFolders Verbatim\n\n\
             Channel bench\nFar :remote:\nNear :local:\nPatterns INBOX Sent\nCreate Near\nSyncState *\nSync Pull\n",
            port = dovecot.imaps_port,
            ca = certs().ca.display(),
            m = maildir.display(),
        ),
    )
    .expect("mbsyncrc");
    config
}

thread_local! {
    static MBSYNC_DIR: std::cell::RefCell<Option<tempfile::TempDir>> = const { std::cell::RefCell::new(None) };
}

/// Runs mbsync from an empty local store; returns wall seconds and peak RSS (KB).
fn run_mbsync(dovecot: &Dovecot, user: &str) -> (f64, u64) {
    let local = tempfile::tempdir().expect("tempdir");
    let config = mbsync_config(dovecot, user, local.path());
    let result = time_mbsync(&config);
    MBSYNC_DIR.with(|d| *d.borrow_mut() = Some(local));
    result
}

/// Runs mbsync again on the store of the last [`run_mbsync`]: nothing new to fetch.
fn run_mbsync_again(dovecot: &Dovecot, user: &str) -> (f64, u64) {
    MBSYNC_DIR.with(|d| {
        let guard = d.borrow();
        let local = guard.as_ref().expect("an earlier mbsync run");
        let config = mbsync_config(dovecot, user, local.path());
        time_mbsync(&config)
    })
}

fn time_mbsync(config: &Path) -> (f64, u64) {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg("mbsync")
        .arg("-c")
        .arg(config)
        .args(["-a", "-q"])
        .output()
        .expect("run mbsync (apt-get install isync time)");
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mbsync failed: {stderr}");
    let rss = stderr.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    (secs, rss)
}

struct SyncRun {
    secs: f64,
    peak_rss_kb: u64,
    /// Highest anonymous (heap) RSS seen while polling for the end of the sync.
    peak_anon_kb: u64,
    commands: u64,
    db: TestDb,
    dir: tempfile::TempDir,
}

/// Starts a daemon on an empty store, adds the account, and waits for both folders'
/// initial sync. Wall time runs from the daemon's start to the last commit.
async fn run_mailsync(dovecot: &Dovecot, user: &str, backend: &str, expected_stored: i64) -> SyncRun {
    let db = if backend == "sqlite" { TestDb::sqlite() } else { TestDb::postgres() };
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), db.url(), "");
    let account = add_account(dir.path(), db.url(), dovecot, user, PASSWORD);
    // The CRM knows everyone the mailbox corresponds with, so matching has work to do.
    let csv: String = std::iter::once("name,email".to_string())
        .chain(corpus::correspondents().iter().enumerate().map(|(i, e)| format!("Contact {i},{e}")))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("contacts.csv"), csv).expect("contacts.csv");
    ok(mailsync(dir.path(), db.url()).args(["contact", "import", "contacts.csv"]));
    let store = db.store().await;
    let started = Instant::now();
    let mut daemon = start_daemon_json(dir.path(), db.url());
    // BENCH_PERF=FILE records a CPU profile of the daemon during the sync (perf(1)).
    let mut perf = std::env::var("BENCH_PERF").ok().map(|out| {
        Command::new("perf")
            .args([
                "record",
                "-F",
                "250",
                "--call-graph",
                "dwarf,32768",
                "-o",
                &out,
                "-p",
                &daemon.child.id().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf")
    });
    // VmHWM counts SQLite's memory-mapped database pages too; the heap's peak is sampled.
    let peak_anon_kb = std::cell::Cell::new(0u64);
    let pid = daemon.child.id();
    poll_async(Duration::from_secs(1800), "initial sync", || async {
        peak_anon_kb.set(peak_anon_kb.get().max(proc_status(pid, "RssAnon:")));
        let folders = store.folders(account).await.ok()?;
        (folders.len() == 2 && folders.iter().all(|f| f.initial_sync_done)).then_some(())
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let peak_anon_kb = peak_anon_kb.get();
    if let Some(perf) = perf.as_mut() {
        let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait();
    }
    let peak_rss_kb = vm_hwm_kb(daemon.child.id());
    eprintln!("  mailsync CPU {:.2} s in {secs:.2} s wall", cpu_ticks(daemon.child.id()) as f64 / 100.0);
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(store.pool()).await.expect("count");
    assert!(stored >= expected_stored, "stored {stored} of {expected_stored}");
    let linked: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT message_id) FROM message_links")
        .fetch_one(store.pool())
        .await
        .expect("count");
    eprintln!("  {linked} of {stored} messages linked to contacts");
    let commands = poll_async(Duration::from_secs(30), "sync log lines", || async {
        let lines = in_sync_lines(&daemon.log());
        (lines.len() >= 2).then(|| lines.iter().map(|l| l["commands"].as_u64().unwrap_or(0)).sum())
    })
    .await;
    daemon.terminate();
    if let Ok(keep) = std::env::var("BENCH_KEEP_LOG") {
        let _ = std::fs::copy(dir.path().join("daemon.log"), format!("{keep}.{backend}.log"));
    }
    store.close().await;
    SyncRun { secs, peak_rss_kb, peak_anon_kb, commands, db, dir }
}

struct RestartRun {
    max_folder_ms: u64,
    bytes_per_folder: u64,
}

/// Starts the daemon again on a fully synced store and reads what re-checking cost.
async fn restart_unchanged(run: &SyncRun) -> RestartRun {
    let mut daemon = start_daemon_json(run.dir.path(), run.db.url());
    let lines = poll_async(Duration::from_secs(120), "restart sync lines", || async {
        let lines = in_sync_lines(&daemon.log());
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    daemon.terminate();
    if let Ok(keep) = std::env::var("BENCH_KEEP_LOG") {
        static RESTARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RESTARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::copy(run.dir.path().join("daemon.log"), format!("{keep}.restart{n}.log"));
    }
    let max_folder_ms = lines.iter().map(|l| l["elapsed_ms"].as_u64().unwrap_or(0)).max().unwrap_or(0);
    let bytes: u64 =
        lines.iter().map(|l| l["bytes_in"].as_u64().unwrap_or(0) + l["bytes_out"].as_u64().unwrap_or(0)).sum();
    RestartRun { max_folder_ms, bytes_per_folder: bytes / lines.len().max(1) as u64 }
}

fn start_daemon_json(dir: &Path, url: &str) -> Daemon {
    // JSON logs so the harness can read the per-folder figures the worker reports.
    let config = dir.join("mailsync.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    // BENCH_LOG_LEVEL=debug shows per-batch timings in the daemon's log.
    let level = std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    // Production's account check interval (the tests use a faster one).
    let text = text.replace("account_check_ms = 200\n", "account_check_ms = 2000\n");
    let text = text.replace(
        "format = \"text\"\nlevel = \"info,mailsync=debug\"",
        &format!("format = \"json\"\nlevel = \"{level}\""),
    );
    std::fs::write(&config, text).expect("config");
    Daemon::start(dir, url)
}

fn in_sync_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "folder in sync")
        .collect()
}

fn vm_hwm_kb(pid: u32) -> u64 {
    proc_status(pid, "VmHWM:")
}

fn vm_rss_kb(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

// -----------------------------------------------------------------------------------------
// Figures 3 and 4

async fn push_figures(args: &Args, rows: &mut Vec<Row>, backend: &str) {
    let max_accounts = args.accounts.iter().copied().max().unwrap_or(1);
    let users: Vec<(String, String)> =
        (0..max_accounts).map(|i| (format!("idle{i}@bench.example"), PASSWORD.to_string())).collect();
    let user_refs: Vec<(&str, &str)> = users.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    let dovecot = Dovecot::start_with(&user_refs, BENCH_DOVECOT);
    for (user, _) in &users {
        dovecot.write_maildir(user, "", &[message("seed@x.example", user, "seed", &format!("seed-{user}"), "x")]);
    }
    for &n in &args.accounts {
        let db = if backend == "sqlite" { TestDb::sqlite() } else { TestDb::postgres() };
        let dir = tempfile::tempdir().expect("tempdir");
        write_config(dir.path(), db.url(), "");
        for (user, _) in users.iter().take(n) {
            add_account(dir.path(), db.url(), &dovecot, user, PASSWORD);
        }
        let store = db.store().await;
        let daemon = start_daemon_json(dir.path(), db.url());
        let baseline_rss = vm_rss_kb(daemon.child.id());
        let started = Instant::now();
        poll_async(Duration::from_secs(600), "all accounts idle", || async {
            let lines = in_sync_lines(&daemon.log()).len();
            (lines >= 2 * n).then_some(())
        })
        .await;
        eprintln!("{backend}: {n} accounts in sync in {:.1?}", started.elapsed());
        // Let start-up work (first commits, allocator, SQLite cache) settle before measuring idle cost.
        tokio::time::sleep(Duration::from_secs(8)).await;

        if args.figures.contains(&4) && n == max_accounts {
            let pid = daemon.child.id();
            let rss = vm_rss_kb(pid);
            let ticks_before = cpu_ticks(pid);
            let window = Duration::from_secs(10);
            tokio::time::sleep(window).await;
            let ticks = cpu_ticks(pid) - ticks_before;
            let per_account_kb = rss.saturating_sub(baseline_rss) as f64 / n as f64;
            rows.push(Row {
                figure: "4".into(),
                metric: format!("RSS per idle account, {n} accounts, {backend}"),
                mailsync: per_account_kb,
                peer: None,
                unit: "KB",
                goal: "<= 100 KB".into(),
                met: Some(per_account_kb <= 100.0),
            });
            let cpu_percent = ticks as f64 / 100.0 / window.as_secs_f64() * 100.0;
            rows.push(Row {
                figure: "4".into(),
                metric: format!("CPU while idle, {n} accounts, {backend}"),
                mailsync: cpu_percent,
                peer: None,
                unit: "% of a core",
                goal: "no measurable CPU (< 1%)".into(),
                met: Some(cpu_percent < 1.0),
            });
        }

        if args.figures.contains(&3) {
            let samples = 40.min(10 * n).max(20);
            let mut latencies = Vec::with_capacity(samples);
            let mut rng = corpus::Rng::new(99);
            for i in 0..samples {
                let (user, _) = &users[rng.below(n as u64) as usize];
                let id = format!("push-{backend}-{n}-{i}@bench.example");
                dovecot.deliver(user, &message("x@y.example", user, "push", &id, "x"));
                let delivered = Instant::now();
                wait_for_message(&store, &id, Duration::from_secs(60)).await;
                latencies.push(delivered.elapsed().as_secs_f64());
            }
            latencies.sort_by(f64::total_cmp);
            let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
            let figure = if backend == "sqlite" { "3" } else { "5" };
            rows.push(Row {
                figure: figure.into(),
                metric: format!("push latency p50, {n} accounts, {backend}"),
                mailsync: pct(0.5),
                peer: None,
                unit: "s",
                goal: "Dovecot's own notify delay is 0.5 s".into(),
                met: None,
            });
            rows.push(Row {
                figure: figure.into(),
                metric: format!("push latency p99, {n} accounts, {backend}"),
                mailsync: pct(0.99),
                peer: None,
                unit: "s",
                goal: "< 1 s at 1,000 accounts".into(),
                met: (n >= 1000).then(|| pct(0.99) < 1.0),
            });
        }
        drop(daemon);
        store.close().await;
    }
}

// -----------------------------------------------------------------------------------------
// Output

fn report(args: &Args, rows: &[Row]) {
    println!("\n| fig | metric | mailsync | peer | goal | met |\n|---|---|---|---|---|---|");
    for r in rows {
        let peer = r.peer.as_ref().map_or("-".to_string(), |(name, v)| format!("{} {:.3} {}", name, v, r.unit));
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        println!("| {} | {} | {:.3} {} | {} | {} | {} |", r.figure, r.metric, r.mailsync, r.unit, peer, r.goal, met);
    }
    std::fs::create_dir_all(&args.out).expect("results dir");
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "figure": r.figure, "metric": r.metric, "mailsync": r.mailsync, "unit": r.unit,
                "peer": r.peer.as_ref().map(|(n, _)| n.clone()), "peer_value": r.peer.as_ref().map(|(_, v)| *v),
                "goal": r.goal, "met": r.met,
            })
        })
        .collect();
    let doc = json!({
        "messages": args.messages, "accounts": args.accounts, "runs": args.runs,
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "rows": json_rows,
    });
    let json_path = args.out.join("latest.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc).expect("json")).expect("write json");
    eprintln!("wrote {}", json_path.display());
    chart(args, rows);
}

/// A bar chart of the rows measured against a peer (mailsync vs peer, same unit).
fn chart(args: &Args, rows: &[Row]) {
    let compared: Vec<&Row> = rows.iter().filter(|r| r.peer.is_some()).collect();
    if compared.is_empty() {
        return;
    }
    let data = args.out.join("latest.dat");
    let mut f = std::fs::File::create(&data).expect("dat");
    // Mixed units: each metric as a percentage of the peer's value (peer = 100).
    for r in &compared {
        let peer = r.peer.as_ref().map_or(0.0, |(_, v)| *v);
        let label = format!("{}\\n{:.2} vs {:.2} {}", r.metric.replace('"', "'"), r.mailsync, peer, r.unit);
        let relative = if peer > 0.0 { r.mailsync / peer * 100.0 } else { 0.0 };
        writeln!(f, "\"{label}\" {relative} 100").expect("write dat");
    }
    let png = args.out.join("latest.png");
    let script = format!(
        "set terminal png size 1400,{h}\nset output '{png}'\nset style data histograms\nset style fill solid 0.8\n\
         set key top right\nset xtics rotate by -20 font ',9'\nset bmargin 14\nset rmargin 12\n\
         set ylabel '% of the peer (peer = 100)'\nset title 'mailsync against its peer, same run (lower is better)'\n\
         set yrange [0:*]\nplot '{data}' using 2:xtic(1) title 'mailsync', '' using 3 title 'peer'\n",
        h = 700,
        png = png.display(),
        data = data.display(),
    );
    let status = Command::new("gnuplot").stdin(Stdio::piped()).spawn().and_then(|mut child| {
        child.stdin.take().expect("stdin").write_all(script.as_bytes())?;
        child.wait()
    });
    match status {
        Ok(s) if s.success() => eprintln!("wrote {}", png.display()),
        _ => eprintln!("gnuplot failed or is missing (apt-get install gnuplot-nox); no chart"),
    }
    let _ = std::fs::remove_file(data);
}
