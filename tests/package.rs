//! The Debian package: built with `cargo deb` from the test binary, installed with dpkg
//! on this machine, then the installed service started the way its installed unit says
//! (user, working directory, credentials, notify socket; systemd is not PID 1 here), used
//! through the API and the installed CLI, stopped, and the package purged.
//!
//! It installs into the real system (root needed, as for the rest of the suite's
//! packages), so everything it creates is removed again except the `mailsync` system
//! user, which Debian packages keep on purge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const UNIT: &str = "/usr/lib/systemd/system/mailsync.service";

/// `Key=value` lines of the installed unit's `[Service]` section (repeated keys kept).
fn unit_settings(text: &str) -> HashMap<String, Vec<String>> {
    let mut settings: HashMap<String, Vec<String>> = HashMap::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if let Some((key, value)) = line.split_once('=').filter(|_| in_service && !line.starts_with('#')) {
            settings.entry(key.to_string()).or_default().push(value.to_string());
        }
    }
    settings
}

fn purge() {
    let _ = Command::new("dpkg").args(["--purge", "mailsync"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

#[test]
fn the_debian_package_installs_runs_and_purges() {
    // Leftovers of an interrupted earlier run must not decide the outcome.
    purge();
    let out = tempfile::tempdir().unwrap();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    // The test binary (dev profile) is packaged, so the suite builds nothing twice; a
    // release package is the same command without `--no-build --profile dev`.
    ok(Command::new("cargo")
        .args(["deb", "--no-build", "--profile", "dev", "--fast", "--quiet", "--manifest-path", manifest, "--output"])
        .arg(out.path()));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote a .deb");

    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for file in [
        "./usr/bin/mailsync",
        "./usr/lib/systemd/system/mailsync.service",
        "./usr/lib/sysusers.d/mailsync.conf",
        "./usr/lib/tmpfiles.d/mailsync.conf",
        "./etc/mailsync/mailsync.toml",
        "./usr/share/doc/mailsync/examples/mailsync.toml",
    ] {
        assert!(contents.lines().any(|l| l.ends_with(file)), "{file} missing from the package:\n{contents}");
    }
    // An operator's edits survive upgrades.
    let conffiles = ok(Command::new("dpkg-deb").arg("--info").arg(&deb).arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/mailsync/mailsync.toml");

    ok(Command::new("dpkg").arg("-i").arg(&deb));
    let installed = Installed;

    // What postinst left: the user, secrets readable by the service's group only.
    ok(Command::new("getent").args(["passwd", "mailsync"]));
    let key = std::fs::read_to_string("/etc/mailsync/master.key").unwrap();
    assert_eq!(key.trim().len(), 64, "a 32-byte hex master key");
    let token = std::fs::read_to_string("/etc/mailsync/api-tokens").unwrap().trim().to_string();
    assert!(token.len() >= 32);
    for file in ["/etc/mailsync/master.key", "/etc/mailsync/api-tokens", "/etc/mailsync/mailsync.toml"] {
        let ls = ok(Command::new("stat").args(["-c", "%a %U %G"]).arg(file));
        assert_eq!(ls.trim(), "640 root mailsync", "{file}");
    }

    // Start the service as its installed unit describes it.
    let unit = unit_settings(&std::fs::read_to_string(UNIT).unwrap());
    let one = |key: &str| unit.get(key).and_then(|v| v.last()).cloned().unwrap_or_else(|| panic!("{key}= in the unit"));
    assert_eq!(one("Type"), "notify");
    let user = one("User");
    let workdir = one("WorkingDirectory");
    assert_eq!(workdir, format!("/var/lib/{}", one("StateDirectory")), "the state directory is the working directory");
    // StateDirectory=: created and owned by the service user.
    ok(Command::new("install").args(["-d", "-m", "0700", "-o", &user, "-g", &user, &workdir]));
    // LoadCredential=: copies in a directory only the service user reads.
    let creds = tempfile::Builder::new().prefix("mailsync-creds").tempdir_in("/run").unwrap();
    for credential in unit.get("LoadCredential").expect("LoadCredential= in the unit") {
        let (name, source) = credential.split_once(':').unwrap();
        std::fs::copy(source, creds.path().join(name)).unwrap();
    }
    ok(Command::new("chown").args(["-R", &user]).arg(creds.path()));
    let notify_dir = tempfile::Builder::new().prefix("mailsync-notify").tempdir_in("/run").unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    ok(Command::new("chown").args(["-R", &user]).arg(notify_dir.path()));

    let api_port = free_port();
    let drop_port = free_port();
    let exec: Vec<String> = one("ExecStart").split_whitespace().map(str::to_string).collect();
    let log_path = workdir.clone() + "/test-daemon.log";
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = Command::new("setpriv")
        .args(["--reuid", &user, "--regid", &user, "--init-groups", "--"])
        .args(&exec)
        .current_dir(&workdir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CREDENTIALS_DIRECTORY", creds.path())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("MAILSYNC_API_LISTEN", format!("127.0.0.1:{api_port}"))
        .env("MAILSYNC_BCC_DROP_LISTEN", format!("127.0.0.1:{drop_port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + START_DEADLINE;
    let mut ready = false;
    while !ready && Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf) {
            ready = String::from_utf8_lossy(&buf[..n]).contains("READY=1");
        }
        assert!(daemon.try_wait().unwrap().is_none(), "the service exited:\n{}", daemon_log());
    }
    assert!(ready, "READY=1 from the installed service:\n{}", daemon_log());

    let (code, _) = http(api_port, "GET", "/healthz", None, None).unwrap();
    assert_eq!(code, 200);
    // The token postinst generated authorizes the API (it reached the daemon as a credential).
    let (code, body) = http(api_port, "GET", "/v1/status", Some(&token), None).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, _) = http(api_port, "GET", "/v1/status", Some("wrong"), None).unwrap();
    assert_eq!(code, 401);
    // The store is where the packaged configuration puts it, owned by the service user.
    let owner = ok(Command::new("stat").args(["-c", "%U"]).arg("/var/lib/mailsync/mailsync.db"));
    assert_eq!(owner.trim(), user);
    // The installed CLI, run as the service user with the packaged configuration, reads
    // the same store and key as the daemon.
    let status = ok(Command::new("setpriv")
        .args([
            "--reuid",
            &user,
            "--regid",
            &user,
            "--init-groups",
            "--",
            "/usr/bin/mailsync",
            "--config",
            "/etc/mailsync/mailsync.toml",
        ])
        .args(["status", "--json"])
        .current_dir("/"));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert!(status["accounts"].is_array(), "{status}");

    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let status = poll(START_DEADLINE, "the service to stop", || daemon.try_wait().unwrap());
    assert!(status.success(), "{status}\n{}", daemon_log());

    drop(installed);
    assert!(!Path::new("/usr/bin/mailsync").exists(), "purged");
    assert!(!Path::new(UNIT).exists(), "purged");
    // Purging keeps the store and the master key: without the key the store's secrets
    // are lost, so removing them is left to the operator.
    assert!(Path::new("/var/lib/mailsync/mailsync.db").exists());
    assert!(Path::new("/etc/mailsync/master.key").exists());
    let _ = std::fs::remove_dir_all("/var/lib/mailsync");
    let _ = std::fs::remove_dir_all("/etc/mailsync");
}

/// Purges the package when dropped, also when an assertion fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        purge();
    }
}
