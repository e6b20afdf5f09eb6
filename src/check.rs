//! `mailsync check --account ID` (and `POST /v1/accounts/{id}/check`): a step-by-step
//! diagnosis of one account, each step with what it found and, when it fails, the fix:
//! DNS, TCP to the IMAP port, TLS and the certificate, login, capabilities, INBOX and
//! Sent, then the SMTP server (or relay) with its authentication. The first failing IMAP
//! step ends the IMAP part; SMTP is checked regardless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::imap::connection::{ServerSettings, connect};
use crate::imap::folders::find_folders;
use crate::imap::worker::Credentials;
use crate::imap::{ErrorClass, SyncError};
use crate::secrets::MasterKey;
use crate::store::{Store, TlsMode};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Step {
    pub step: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do about a failure; empty when the step passed.
    pub fix: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    pub account: i64,
    pub email: String,
    pub ok: bool,
    pub steps: Vec<Step>,
}

impl CheckReport {
    fn pass(&mut self, step: &'static str, detail: impl Into<String>) {
        self.steps.push(Step { step, ok: true, detail: detail.into(), fix: String::new() });
    }

    fn fail(&mut self, step: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.ok = false;
        self.steps.push(Step { step, ok: false, detail: detail.into(), fix: fix.into() });
    }

    pub fn table(&self) -> String {
        let mut out = format!("account {} ({}): {}\n", self.account, self.email, if self.ok { "OK" } else { "FAILED" });
        for s in &self.steps {
            out += &format!("  [{}] {:<12} {}\n", if s.ok { "ok" } else { "FAIL" }, s.step, s.detail);
            if !s.fix.is_empty() {
                out += &format!("       {:<12} fix: {}\n", "", s.fix);
            }
        }
        out
    }
}

/// Runs every step against the account's servers.
pub async fn check_account(
    store: &Store,
    key: &Arc<MasterKey>,
    config: &Config,
    account_id: i64,
) -> crate::store::Result<CheckReport> {
    let account = store.account(account_id).await?;
    let mut report = CheckReport { account: account.id, email: account.email.clone(), ok: true, steps: Vec::new() };
    imap_steps(store, key, config, &account, &mut report).await;
    if config.smtp_relay.host.is_empty() && account.smtp_host.is_empty() {
        report.pass("smtp", "no SMTP server and no relay configured: this account syncs but cannot send");
    } else {
        smtp_step(store, key, config, account.user_id, &mut report).await;
    }
    Ok(report)
}

async fn imap_steps(
    store: &Store,
    key: &Arc<MasterKey>,
    config: &Config,
    account: &crate::store::Account,
    report: &mut CheckReport,
) {
    let (host, port) = (account.imap_host.as_str(), account.imap_port);
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            report.pass("dns", format!("{host} -> {}", addrs.join(", ")));
        }
        Err(e) => {
            return report.fail("dns", format!("{host} does not resolve: {e}"), ErrorClass::HostOrPortWrong.fix());
        }
    }
    let timeout = Duration::from_secs(config.sync.connect_timeout_secs);
    let started = Instant::now();
    match crate::net::connect_tcp(host, port, timeout).await {
        Ok(_) => report.pass("tcp", format!("{host}:{port} answers ({} ms)", started.elapsed().as_millis())),
        Err(e) => return report.fail("tcp", e.to_string(), ErrorClass::HostOrPortWrong.fix()),
    }
    let fail = |report: &mut CheckReport, step: &'static str, e: &SyncError| {
        report.fail(step, e.detail.clone(), e.class.fix())
    };
    let settings = match ServerSettings::for_account(account, &config.sync) {
        Ok(s) => s,
        Err(e) => return fail(report, "tls", &e),
    };
    let credentials = match Credentials::for_account(store, key, account).await {
        Ok(c) => c,
        Err(e) => return fail(report, "login", &e),
    };
    let credential = match credentials.current().await {
        Ok(c) => c,
        Err(e) => return fail(report, "login", &e),
    };
    let tls = match account.imap_tls {
        TlsMode::Implicit => "implicit TLS",
        TlsMode::Starttls => "STARTTLS",
    };
    let mut conn = match connect(&settings, &credential).await {
        Ok(conn) => conn,
        Err(e) => {
            match e.class {
                ErrorClass::CertificateInvalid | ErrorClass::TlsRequired => fail(report, "tls", &e),
                ErrorClass::AuthFailed | ErrorClass::AppPasswordNeeded => {
                    report.pass("tls", format!("{tls}, certificate verified"));
                    fail(report, "login", &e);
                }
                _ => fail(report, "imap", &e),
            }
            return;
        }
    };
    report.pass("tls", format!("{tls}, certificate verified"));
    report.pass("login", format!("logged in as {}", account.username));
    let c = &conn.caps;
    let caps: Vec<&str> = [
        ("IDLE", c.idle),
        ("CONDSTORE", c.condstore),
        ("QRESYNC", c.qresync),
        ("SPECIAL-USE", c.special_use),
        ("UIDPLUS", c.uidplus),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| name)
    .collect();
    report.pass(
        "capabilities",
        if c.idle {
            caps.join(" ")
        } else {
            format!("{} (no IDLE: new mail is polled every {} s)", caps.join(" "), config.sync.poll_interval_secs)
        },
    );
    match find_folders(&mut conn.session).await {
        Ok(names) => match names.sent {
            Some(sent) => report.pass("folders", format!("INBOX {:?}, Sent {sent:?}", names.inbox)),
            None => report.pass("folders", format!("INBOX {:?}; no Sent folder (only INBOX is synced)", names.inbox)),
        },
        Err(e) => fail(report, "folders", &e),
    }
    let _ = conn.session.logout().await;
}

async fn smtp_step(store: &Store, key: &Arc<MasterKey>, config: &Config, user_id: i64, report: &mut CheckReport) {
    let sender = match crate::outbound::sender::SenderContext::new(store.clone(), key.clone(), config) {
        Ok(s) => s,
        Err(e) => return report.fail("smtp", e.to_string(), "fix the [smtp_relay] settings"),
    };
    match sender.probe(user_id).await {
        Ok(detail) => report.pass("smtp", detail),
        Err(e) if e.is_auth_refused() => report.fail(
            "smtp",
            e.reply.clone(),
            "check the SMTP credentials (an app password or OAuth may be required)",
        ),
        Err(e) => report.fail(
            "smtp",
            e.reply.clone(),
            "check the SMTP host, port and TLS mode of the account (or [smtp_relay])",
        ),
    }
}
