//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Two sources: counters the daemon keeps in memory since it started (IMAP connections
//! and errors by class, push latency), and figures read from the store at scrape time
//! (account states, messages by source, skipped messages, outbox by status, BCC-drop
//! outcomes, contacts-sync results, and how long the store took to answer). Labels carry
//! ids and fixed words, never addresses.

use std::fmt::Write;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::imap::ErrorClass;
use crate::store::{Result, Store};

/// Upper bounds (seconds) of the push-latency histogram buckets.
const PUSH_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// In-memory counters, one set per process.
pub struct Counters {
    imap_connections: AtomicU64,
    imap_errors: [AtomicU64; ErrorClass::ALL.len()],
    push_buckets: [AtomicU64; PUSH_BUCKETS.len()],
    push_count: AtomicU64,
    push_sum_micros: AtomicU64,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| Counters {
    imap_connections: AtomicU64::new(0),
    imap_errors: std::array::from_fn(|_| AtomicU64::new(0)),
    push_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
    push_count: AtomicU64::new(0),
    push_sum_micros: AtomicU64::new(0),
});

/// An IMAP session was opened (the first of a worker, or a reconnection).
pub fn imap_connection() {
    COUNTERS.imap_connections.fetch_add(1, Ordering::Relaxed);
}

/// A folder's session ended with an error of `class`.
pub fn imap_error(class: ErrorClass) {
    if let Some(i) = ErrorClass::ALL.iter().position(|c| *c == class) {
        COUNTERS.imap_errors[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Time from the server's notification (IDLE) to the new mail committed.
pub fn push_latency(latency: Duration) {
    let seconds = latency.as_secs_f64();
    for (bound, bucket) in PUSH_BUCKETS.iter().zip(&COUNTERS.push_buckets) {
        if seconds <= *bound {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }
    COUNTERS.push_count.fetch_add(1, Ordering::Relaxed);
    COUNTERS.push_sum_micros.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
}

/// The whole exposition.
pub async fn render(store: &Store) -> Result<String> {
    let started = Instant::now();
    let snapshot = store.stats().await?;
    let store_seconds = started.elapsed().as_secs_f64();
    let mut out = String::new();
    let c = &*COUNTERS;

    family(&mut out, "mailsync_account_state", "gauge", "1 for each account's current sync state");
    for (account, state) in &snapshot.account_states {
        let _ = writeln!(out, "mailsync_account_state{{account=\"{account}\",state=\"{state}\"}} 1");
    }
    gauge_by(
        &mut out,
        "mailsync_messages_stored",
        "Messages in the store, by source",
        "source",
        &snapshot.messages_by_source,
    );
    family(&mut out, "mailsync_messages_skipped", "gauge", "Messages skipped by the ingest screen");
    let _ = writeln!(out, "mailsync_messages_skipped {}", snapshot.skipped);
    family(&mut out, "mailsync_imap_connections_total", "counter", "IMAP sessions opened since start");
    let _ = writeln!(out, "mailsync_imap_connections_total {}", c.imap_connections.load(Ordering::Relaxed));
    family(&mut out, "mailsync_imap_errors_total", "counter", "Folder sessions ended by an error, by class");
    for (class, n) in ErrorClass::ALL.iter().zip(&c.imap_errors) {
        let _ =
            writeln!(out, "mailsync_imap_errors_total{{class=\"{}\"}} {}", class.as_str(), n.load(Ordering::Relaxed));
    }
    family(
        &mut out,
        "mailsync_push_latency_seconds",
        "histogram",
        "From the server's IDLE notification to the new mail committed",
    );
    for (bound, bucket) in PUSH_BUCKETS.iter().zip(&c.push_buckets) {
        let _ =
            writeln!(out, "mailsync_push_latency_seconds_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
    }
    let count = c.push_count.load(Ordering::Relaxed);
    let _ = writeln!(out, "mailsync_push_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ =
        writeln!(out, "mailsync_push_latency_seconds_sum {}", c.push_sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
    let _ = writeln!(out, "mailsync_push_latency_seconds_count {count}");
    gauge_by(
        &mut out,
        "mailsync_outbox_messages",
        "Outgoing messages, by status",
        "status",
        &snapshot.outbox_by_status,
    );
    let drops_help = "Messages received by the BCC-drop listener, by outcome";
    gauge_by(&mut out, "mailsync_bcc_drop_messages", drops_help, "outcome", &snapshot.drops_by_outcome);
    family(
        &mut out,
        "mailsync_contacts_sync_last_run_timestamp_seconds",
        "gauge",
        "End of each user's last contacts sync",
    );
    for s in &snapshot.contact_syncs {
        let _ = writeln!(
            out,
            "mailsync_contacts_sync_last_run_timestamp_seconds{{user=\"{}\"}} {}",
            s.user_id,
            s.last_sync_at as f64 / 1000.0
        );
    }
    family(&mut out, "mailsync_contacts_sync_failing", "gauge", "1 when a user's last contacts sync failed");
    for s in &snapshot.contact_syncs {
        let _ = writeln!(out, "mailsync_contacts_sync_failing{{user=\"{}\"}} {}", s.user_id, u8::from(s.failing));
    }
    family(
        &mut out,
        "mailsync_contacts_sync_items",
        "gauge",
        "Last run's counts (created, updated, unchanged, conflicts...), per user",
    );
    for s in &snapshot.contact_syncs {
        for (key, n) in &s.counts {
            let _ = writeln!(out, "mailsync_contacts_sync_items{{user=\"{}\",kind=\"{key}\"}} {n}", s.user_id);
        }
    }
    family(
        &mut out,
        "mailsync_store_scrape_seconds",
        "gauge",
        "How long the store took to answer this scrape's queries",
    );
    let _ = writeln!(out, "mailsync_store_scrape_seconds {store_seconds}");
    Ok(out)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A gauge family with one series per value of `label`.
fn gauge_by(out: &mut String, name: &str, help: &str, label: &str, values: &[(String, i64)]) {
    family(out, name, "gauge", help);
    for (value, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}
