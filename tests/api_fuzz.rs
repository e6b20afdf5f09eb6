//! The API fuzzed by schemathesis against its own OpenAPI document: whatever it is sent,
//! it never answers with a server error (5xx), and every response matches the schema the
//! document gives for it. schemathesis is installed from PyPI by
//! `scripts/install-test-deps` (or found through `SCHEMATHESIS`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::process::Command;

use common::*;

#[tokio::test]
async fn schemathesis_finds_no_server_error() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Short network timeouts: fuzzed accounts and address books point anywhere.
    write_config(d, db.url(), "");
    let config = std::fs::read_to_string(d.join("mailsync.toml"))
        .unwrap()
        .replace("connect_timeout_secs = 5", "connect_timeout_secs = 2");
    std::fs::write(d.join("mailsync.toml"), config).unwrap();
    let daemon = Daemon::start(d, db.url());
    let schemathesis =
        std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "/opt/mailsync-test/schemathesis/bin/schemathesis".into());
    let base = format!("http://127.0.0.1:{}", daemon.api_port);
    let out = Command::new(&schemathesis)
        .args(["run", &format!("{base}/v1/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {}", daemon.token)])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "30",
        ])
        .env("NO_COLOR", "1")
        // Its cache (.schemathesis/) goes to the test's directory, not the source tree.
        .current_dir(d)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {schemathesis} (scripts/install-test-deps installs it): {e}"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(report.contains("passed"), "{report}");
    // Every documented operation was exercised.
    let selected = report.split("Selected: ").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default().trim();
    assert!(
        !selected.is_empty() && report.contains(&format!("Tested: {selected}")),
        "not every operation tested:\n{report}"
    );
}
