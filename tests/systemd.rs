//! The systemd integration where systemd is not PID 1: the unit's hardening score, and
//! the daemon's sd_notify protocol (READY, WATCHDOG pings, STOPPING) on a socket the test
//! listens on, as systemd would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn the_unit_rates_ok_in_systemd_analyze_security() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/mailsync.service"))
        .output()
        .expect("systemd-analyze (package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for mailsync.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(score <= 2.0, "exposure {score} (must be 2.0 or lower)");
}

/// Resource bounds a hostile input cannot push past: memory (throttled, then the unit is
/// stopped and restarted), no core dumps, no link-local (cloud metadata) addresses. The
/// unit must also load without unknown keys on this machine's systemd.
#[test]
fn the_unit_bounds_memory_core_dumps_and_link_local_addresses() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/mailsync.service")).unwrap();
    for line in ["MemoryHigh=1G", "MemoryMax=2G", "LimitCORE=0", "IPAddressDeny=169.254.0.0/16 fe80::/10"] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks `{line}`");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/mailsync.service"))
        .output()
        .expect("systemd-analyze (package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Unknown key") && !stderr.contains("Failed to parse"), "{stderr}");
}

#[tokio::test]
async fn the_daemon_notifies_ready_feeds_the_watchdog_and_says_stopping() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, db.url(), "");
    let socket_path = d.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let path = socket_path.to_str().unwrap();
    // A 1 s watchdog: the daemon pings every 0.5 s while its store answers.
    let mut daemon = Daemon::start_with_env(d, db.url(), &[("NOTIFY_SOCKET", path), ("WATCHDOG_USEC", "1000000")]);

    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + SYNC_DEADLINE;
    while Instant::now() < deadline && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 3 {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(seen.first().is_some_and(|m| m.contains("READY=1")), "READY first: {seen:?}");
    assert!(seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3, "{seen:?}");

    // Reload (SIGHUP, what ExecReload sends): RELOADING=1 then READY=1; the new log
    // level applies; a broken file is reported and the running configuration kept.
    let config_path = d.join("mailsync.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, config.replace("level = \"info,mailsync=debug\"", "level = \"info\"")).unwrap();
    let hup = |daemon: &Daemon| Command::new("kill").arg("-HUP").arg(daemon.child.id().to_string()).status().unwrap();
    hup(&daemon);
    let mut after: Vec<String> = Vec::new();
    let deadline = Instant::now() + SYNC_DEADLINE;
    while Instant::now() < deadline && !after.iter().any(|m| m.contains("READY=1")) {
        if let Ok(n) = socket.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !m.contains("WATCHDOG=1") {
                after.push(m);
            }
        }
    }
    assert_eq!(after.first().map(String::as_str), Some("RELOADING=1"), "{after:?}");
    assert!(after.iter().any(|m| m.contains("READY=1")), "{after:?}");
    poll(SYNC_DEADLINE, "the reload logged", || daemon.log().contains("log level applied").then_some(()));
    std::fs::write(&config_path, "[database\nbroken").unwrap();
    hup(&daemon);
    poll(SYNC_DEADLINE, "the broken file reported", || daemon.log().contains("does not load").then_some(()));
    assert_eq!(daemon.api("GET", "/healthz", None).0, 200, "still serving");

    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
}

/// ExecReload applies changed sections: [bcc_drop] and [outbound] restart only their own
/// component (the account's IDLE connection stays), [sync] restarts the sync workers.
#[tokio::test]
async fn reload_applies_changed_sections_and_keeps_unchanged_idle_connections() {
    let user = "rex@example.com";
    let dovecot = Dovecot::start(&[(user, "pw-rex")]);
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, db.url(), "");
    let account = add_account(d, db.url(), &dovecot, user, "pw-rex");
    let daemon = Daemon::start(d, db.url());
    let store = db.store().await;
    wait_initial_sync(&store, account, 2).await;
    let idle_series = format!("mailsync_account_state{{account=\"{account}\",state=\"idle\"}}");
    poll(SYNC_DEADLINE, "the account idling", || (metric(&daemon.metrics(), &idle_series) == Some(1.0)).then_some(()));
    let connections = || metric(&daemon.metrics(), "mailsync_imap_connections_total").unwrap_or(0.0);
    let before = connections();

    let config_path = d.join("mailsync.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let old_drop_port = bcc_drop_port(&config);
    let new_drop_port = free_port();
    let edited = config.replace(&format!("127.0.0.1:{old_drop_port}"), &format!("127.0.0.1:{new_drop_port}"))
        + "[outbound]\nmax_attempts = 7\n";
    std::fs::write(&config_path, &edited).unwrap();
    let hup = || Command::new("kill").arg("-HUP").arg(daemon.child.id().to_string()).status().unwrap();
    hup();
    poll(SYNC_DEADLINE, "[bcc_drop] and [outbound] applied", || {
        let log = daemon.log();
        (log.contains("reload: [bcc_drop] applied") && log.contains("reload: [smtp_relay]/[outbound] applied"))
            .then_some(())
    });
    let banner = poll(SYNC_DEADLINE, "the listener on its new port", || smtp_banner(new_drop_port));
    assert!(banner.starts_with("220 "), "{banner}");
    assert!(smtp_banner(old_drop_port).is_none(), "the old port is closed");
    dovecot.deliver(user, &message("a@b.example", user, "after reload", "after-reload@b.example", "x"));
    wait_for_message(&store, "after-reload@b.example", SYNC_DEADLINE).await;
    assert_eq!(connections(), before, "the IDLE connection was kept");

    // A listen address that is taken: reported, and the listener goes on where it was.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    std::fs::write(&config_path, edited.replace(&format!("127.0.0.1:{new_drop_port}"), &format!("127.0.0.1:{taken}")))
        .unwrap();
    hup();
    poll(SYNC_DEADLINE, "the refusal reported", || {
        daemon.log().contains("reload: [bcc_drop] not applied").then_some(())
    });
    let banner = poll(SYNC_DEADLINE, "the listener back on its port", || smtp_banner(new_drop_port));
    assert!(banner.starts_with("220 "), "{banner}");
    drop(squatter);
    std::fs::write(&config_path, &edited).unwrap();

    std::fs::write(&config_path, edited.replace("[sync]\n", "[sync]\nbatch_size = 77\n")).unwrap();
    hup();
    poll(SYNC_DEADLINE, "[sync] applied", || daemon.log().contains("reload: [sync] applied").then_some(()));
    poll(SYNC_DEADLINE, "the worker reconnected", || (connections() > before).then_some(()));
    dovecot.deliver(user, &message("a@b.example", user, "after sync reload", "after-sync-reload@b.example", "x"));
    wait_for_message(&store, "after-sync-reload@b.example", SYNC_DEADLINE).await;
    assert!(!daemon.log().contains("take effect at the next restart"), "{}", daemon.log());
}

/// The greeting of an SMTP server on the port, if one answers.
fn smtp_banner(port: u16) -> Option<String> {
    use std::io::BufRead;
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}
