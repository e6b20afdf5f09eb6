//! XOAUTH2 login against Dovecot's oauth2 passdb, with a local OAuth 2.0 server
//! (tests/common/oauth.rs) issuing short-lived access tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use std::time::Duration;

use common::oauth::OAuthServer;
use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// Dovecot checking XOAUTH2 tokens against `oauth` (RFC 7662 introspection), with
/// password users `users` and `extra` configuration.
fn oauth_dovecot(oauth: &OAuthServer, users: &[(&str, &str)], extra: &str) -> (Dovecot, tempfile::TempDir) {
    let conf_dir = shared_tempdir();
    let conf = conf_dir.path().join("dovecot-oauth2.conf.ext");
    std::fs::write(
        &conf,
        format!(
            "introspection_mode = post\nintrospection_url = {}\nusername_attribute = username\n\
             active_attribute = active\nactive_value = true\nforce_introspection = yes\n",
            oauth.introspection_url()
        ),
    )
    .unwrap();
    let extra = format!(
        "auth_mechanisms = plain login xoauth2 oauthbearer\n\
         passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n{extra}",
        conf.display()
    );
    (Dovecot::start_with(users, &extra), conf_dir)
}

#[tokio::test]
async fn xoauth2_login_refreshes_the_access_token_after_expiry() {
    let user = "oliver@example.com";
    let oauth = OAuthServer::start(Duration::from_secs(4));
    oauth.grant("rt-oliver", user);
    let (mut dovecot, _conf) = oauth_dovecot(&oauth, &[("nobody-else@example.com", "x")], "");
    dovecot.write_maildir(user, "", &[message("x@y.example", user, "hello", "oauth-1@y.example", "x")]);

    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let out = ok(mailsync(dir.path(), db.url())
        .args(["account", "add", "--email", user, "--imap-host", "localhost", "--json"])
        .args(["--imap-port", &dovecot.imaps_port.to_string()])
        .arg("--ca-file")
        .arg(&certs().ca)
        .args(["--auth", "xoauth2", "--oauth-provider", "custom", "--oauth-client-id", "mailsync-test"])
        .args(["--oauth-token-url", &oauth.token_url(), "--refresh-token-env", "RT"])
        .env("RT", "rt-oliver"));
    let account: i64 = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_i64().unwrap();
    let daemon = Daemon::start(dir.path(), db.url());
    let store = db.store().await;
    poll_async(DEADLINE, "initial sync over XOAUTH2", || async {
        let f = store.folders(account).await.ok()?;
        (f.len() == 2 && f.iter().all(|f| f.initial_sync_done)).then_some(())
    })
    .await;
    assert!(oauth.refreshes() >= 1);
    let first = oauth.accepted_tokens();
    assert!(!first.is_empty(), "Dovecot verified our token by introspection");

    // The access token expires; Dovecot restarts, so the worker must log in again and
    // needs a fresh token.
    let expired = std::time::Instant::now() + oauth.lifetime();
    poll(DEADLINE, "the first access token to expire", || (std::time::Instant::now() > expired).then_some(()));
    dovecot.stop();
    // (LMTP would look the user up in a passdb; this one exists only for OAuth.)
    dovecot.write_maildir(user, "", &[message("x@y.example", user, "after refresh", "oauth-2@y.example", "x")]);
    dovecot.relaunch();
    wait_for_message(&store, "oauth-2@y.example", DEADLINE).await;
    let accepted = oauth.accepted_tokens();
    let new_tokens: Vec<&String> = accepted.iter().filter(|t| !first.contains(t)).collect();
    assert!(
        !new_tokens.is_empty(),
        "a refreshed token was used: {accepted:?}, {} refreshes\n{}\n{}",
        oauth.refreshes(),
        daemon.log(),
        dovecot.log()
    );

    // Tokens are stored sealed, never in clear, and never logged.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT access_token FROM mail_accounts WHERE id = $1")
        .bind(account)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(!stored.is_empty());
    for token in &accepted {
        assert!(!stored.windows(token.len()).any(|w| w == token.as_bytes()));
        assert!(!daemon.log().contains(token.as_str()), "token {token} in the log");
    }
    assert!(!daemon.log().contains("rt-oliver"));

    // A revoked grant is an authentication error with the fix, not a retry loop.
    oauth.revoke("rt-oliver");
    let expired = std::time::Instant::now() + oauth.lifetime();
    poll(DEADLINE, "the current token to expire", || (std::time::Instant::now() > expired).then_some(()));
    dovecot.stop();
    dovecot.relaunch();
    let account = poll_async(DEADLINE, "auth_failed after revocation", || async {
        let a = store.account(account).await.ok()?;
        (a.error_class == "auth_failed").then_some(a)
    })
    .await;
    assert!(account.error_message.contains("reconnect"), "{}", account.error_message);
}

#[tokio::test]
async fn smtp_submission_with_xoauth2_refreshes_a_refused_token() {
    let (user, ann) = ("oliver@example.com", "ann@client.example");
    let oauth = OAuthServer::start(Duration::from_secs(600));
    oauth.grant("rt-oliver", user);
    // Postfix authenticates submissions through Dovecot's auth service (SASL over TCP),
    // which checks XOAUTH2 tokens against the OAuth server, and relays into Dovecot.
    let sasl_port = free_port();
    let (dovecot, _conf) = oauth_dovecot(
        &oauth,
        &[(ann, "pw-ann")],
        &format!("service auth {{\n  inet_listener {{\n    address = 127.0.0.1\n    port = {sasl_port}\n  }}\n}}\n"),
    );
    let postfix = Postfix::start_with(
        &[("client.example", dovecot.lmtp_port)],
        &format!(
            "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:127.0.0.1:{sasl_port}\n\
             smtpd_tls_security_level = may\nsmtpd_tls_auth_only = yes\n\
             smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n",
            certs().cert.display(),
            certs().key.display()
        ),
    );

    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let out = ok(mailsync(dir.path(), db.url())
        .args(["account", "add", "--email", user, "--imap-host", "localhost", "--json"])
        .args(["--imap-port", &dovecot.imaps_port.to_string()])
        .args(["--smtp-host", "localhost", "--smtp-port", &postfix.smtp_port.to_string(), "--smtp-tls", "starttls"])
        .arg("--ca-file")
        .arg(&certs().ca)
        .args(["--auth", "xoauth2", "--oauth-provider", "custom", "--oauth-client-id", "mailsync-test"])
        .args(["--oauth-token-url", &oauth.token_url(), "--refresh-token-env", "RT"])
        .env("RT", "rt-oliver"));
    let account: i64 = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_i64().unwrap();
    let daemon = Daemon::start(dir.path(), db.url());
    let store = db.store().await;
    wait_initial_sync(&store, account, 2).await;

    // The provider revokes the access token the daemon holds; the refresh token is fine.
    oauth.revoke_access_tokens();
    let refreshes = oauth.refreshes();
    let (status, queued) = daemon.api(
        "POST",
        "/v1/messages/send",
        Some(&serde_json::json!({"user": user, "to": [ann], "subject": "via XOAUTH2", "text": "hi"})),
    );
    assert_eq!(status, 202, "{queued}");
    let entry = wait_outbox_final(&daemon, queued["id"].as_i64().unwrap(), DEADLINE);
    assert_eq!(entry["status"], "sent", "{entry}\n{}\n{}", daemon.log(), postfix.log());
    assert_eq!(entry["attempts"], 1, "refused token refreshed within the attempt: {entry}");
    assert!(oauth.refreshes() > refreshes, "a new access token was fetched");
    poll(DEADLINE, "delivery to ann", || (dovecot.maildir_count(ann, "") == 1).then_some(()));
    for token in oauth.accepted_tokens() {
        assert!(!daemon.log().contains(token.as_str()), "token {token} in the log");
    }
}
