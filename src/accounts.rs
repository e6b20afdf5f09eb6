//! Mail-account settings as an operator gives them (CLI flags or API JSON): validated,
//! defaults filled in, the secret sealed, before anything is written.

use std::path::Path;

use serde::Deserialize;

use crate::address::normalize_email;
use crate::net::tls::load_ca_file;
use crate::secrets::{MasterKey, Secret};
use crate::store::{AuthKind, NewAccount, NewPerson, StoreError, TlsMode, default_org};

/// Sealing purpose of account passwords; see [`MasterKey::seal`].
pub const PASSWORD_PURPOSE: &str = "mail-account-password";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    #[serde(default = "default_org")]
    pub org: String,
    pub email: String,
    pub imap_host: String,
    /// Defaults to 993 (implicit TLS) or 143 (STARTTLS).
    #[serde(default)]
    pub imap_port: Option<u16>,
    #[serde(default = "default_tls")]
    pub imap_tls: TlsMode,
    /// Defaults to the email address.
    #[serde(default)]
    pub username: Option<String>,
    pub password: Secret,
    /// Extra trusted CA certificates (PEM) for this account's servers.
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub smtp_host: Option<String>,
    /// Defaults to 465 (implicit TLS) or 587 (STARTTLS).
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub smtp_tls: Option<TlsMode>,
    /// The provider files sent mail into Sent by itself (Gmail): do not APPEND a copy.
    #[serde(default)]
    pub provider_saves_sent: bool,
}

fn default_tls() -> TlsMode {
    TlsMode::Implicit
}

impl AccountInput {
    /// Checks every field and seals the password. Errors name the field.
    pub fn into_new_account(self, key: &MasterKey) -> Result<NewAccount, StoreError> {
        let invalid = |m: String| StoreError::Invalid(m);
        let org = NewPerson { org: self.org, name: "-".into(), ..Default::default() }.validate()?.org;
        let email = normalize_email(&self.email).map_err(|e| invalid(e.to_string()))?;
        let imap_host = valid_host("imap_host", &self.imap_host)?;
        let imap_port = self.imap_port.unwrap_or(match self.imap_tls {
            TlsMode::Implicit => 993,
            TlsMode::Starttls => 143,
        });
        let username = self.username.unwrap_or_else(|| email.clone());
        if username.trim().is_empty() || username.chars().any(char::is_control) {
            return Err(invalid("username must be non-empty printable text".into()));
        }
        if self.password.expose().is_empty() {
            return Err(invalid("the password is empty".into()));
        }
        let ca_file = match self.ca_file.filter(|f| !f.is_empty()) {
            Some(f) => {
                let path = std::path::absolute(Path::new(&f)).map_err(|e| invalid(format!("ca_file {f}: {e}")))?;
                load_ca_file(&path).map_err(|e| invalid(e.to_string()))?;
                path.display().to_string()
            }
            None => String::new(),
        };
        let smtp_host = match self.smtp_host.filter(|h| !h.is_empty()) {
            Some(h) => valid_host("smtp_host", &h)?,
            None => String::new(),
        };
        let smtp_tls = self.smtp_tls.unwrap_or(match self.smtp_port {
            Some(465) => TlsMode::Implicit,
            _ => TlsMode::Starttls,
        });
        let smtp_port = match (&smtp_host[..], self.smtp_port) {
            ("", _) => 0,
            (_, Some(p)) => p,
            (_, None) if smtp_tls == TlsMode::Implicit => 465,
            (_, None) => 587,
        };
        if imap_port == 0 || (!smtp_host.is_empty() && smtp_port == 0) {
            return Err(invalid("ports must be between 1 and 65535".into()));
        }
        let sealed_secret = key.seal(PASSWORD_PURPOSE, &self.password).map_err(|e| invalid(e.to_string()))?;
        Ok(NewAccount {
            org,
            email,
            imap_host,
            imap_port,
            imap_tls: self.imap_tls,
            username,
            auth: AuthKind::Password,
            sealed_secret,
            oauth_provider: String::new(),
            ca_file,
            smtp_host,
            smtp_port,
            smtp_tls,
            provider_saves_sent: self.provider_saves_sent,
        })
    }
}

fn valid_host(field: &str, host: &str) -> Result<String, StoreError> {
    let host = host.trim();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_alphanumeric() || ".-:[]".contains(c));
    if ok {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(StoreError::Invalid(format!("{field} `{host}` is not a host name or IP address")))
    }
}

/// Reads a secret from a file (trailing newline removed) or from an environment variable.
pub fn read_secret(file: Option<&Path>, env_var: Option<&str>) -> Result<Secret, String> {
    match (file, env_var) {
        (Some(path), None) => std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
            .map_err(|e| format!("cannot read password file {}: {e}", path.display())),
        (None, Some(var)) => std::env::var(var)
            .map(Secret::new)
            .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)")),
        _ => Err("give exactly one of --password-file or --password-env".into()),
    }
}
