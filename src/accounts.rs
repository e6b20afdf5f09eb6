//! Mail-account settings as an operator gives them (CLI flags or API JSON): validated,
//! defaults filled in, the secret sealed, before anything is written.

use std::path::Path;

use serde::Deserialize;

use crate::address::normalize_email;
use crate::net::tls::load_ca_file;
use crate::oauth::{CLIENT_SECRET_PURPOSE, Provider, REFRESH_TOKEN_PURPOSE, validate_token_url};
use crate::secrets::{MasterKey, Secret};
use crate::store::{AuthKind, NewAccount, NewPerson, StoreError, TlsMode, default_org};

/// Sealing purpose of account passwords; see [`MasterKey::seal`].
pub const PASSWORD_PURPOSE: &str = "mail-account-password";

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
    #[serde(default = "default_auth")]
    pub auth: AuthKind,
    /// For `auth = password`.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<Secret>,
    /// For `auth = xoauth2`.
    #[serde(default)]
    pub oauth: Option<OAuthInput>,
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

/// The OAuth2 grant of an XOAUTH2 account (Gmail, Microsoft 365, or any RFC 6749 server).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthInput {
    pub provider: Provider,
    /// Required for `custom`; overrides the preset otherwise.
    #[serde(default)]
    pub token_url: Option<String>,
    pub client_id: String,
    /// Absent for public clients.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub client_secret: Option<Secret>,
    #[schema(value_type = String, format = Password)]
    pub refresh_token: Secret,
}

fn default_tls() -> TlsMode {
    TlsMode::Implicit
}

fn default_auth() -> AuthKind {
    AuthKind::Password
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
        let mut oauth_provider = String::new();
        let mut oauth_token_url = String::new();
        let mut oauth_client_id = String::new();
        let mut oauth_client_secret = Vec::new();
        let seal =
            |purpose: &str, secret: &Secret| key.seal(purpose, secret).map_err(|e| StoreError::Invalid(e.to_string()));
        let sealed_secret = match (self.auth, &self.password, &self.oauth) {
            (AuthKind::Password, Some(password), None) => {
                if password.expose().is_empty() {
                    return Err(invalid("the password is empty".into()));
                }
                seal(PASSWORD_PURPOSE, password)?
            }
            (AuthKind::Xoauth2, None, Some(o)) => {
                let url = match (&o.token_url, o.provider.token_url()) {
                    (Some(url), _) => url.clone(),
                    (None, Some(preset)) => preset.to_string(),
                    (None, None) => return Err(invalid("a custom OAuth provider needs a token URL".into())),
                };
                oauth_token_url = validate_token_url(&url).map_err(invalid)?;
                if o.client_id.trim().is_empty() {
                    return Err(invalid("the OAuth client id is empty".into()));
                }
                if o.refresh_token.expose().is_empty() {
                    return Err(invalid("the OAuth refresh token is empty".into()));
                }
                oauth_provider = o.provider.as_str().to_string();
                oauth_client_id = o.client_id.trim().to_string();
                if let Some(secret) = o.client_secret.as_ref().filter(|s| !s.expose().is_empty()) {
                    oauth_client_secret = seal(CLIENT_SECRET_PURPOSE, secret)?;
                }
                seal(REFRESH_TOKEN_PURPOSE, &o.refresh_token)?
            }
            (AuthKind::Password, _, _) => {
                return Err(invalid("auth password takes a password and no oauth settings".into()));
            }
            (AuthKind::Xoauth2, _, _) => {
                return Err(invalid("auth xoauth2 takes oauth settings and no password".into()));
            }
        };
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
        Ok(NewAccount {
            org,
            email,
            imap_host,
            imap_port,
            imap_tls: self.imap_tls,
            username,
            auth: self.auth,
            sealed_secret,
            oauth_provider,
            oauth_token_url,
            oauth_client_id,
            oauth_client_secret,
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
    let ok = !host.is_empty() && host.len() <= 253 && host.chars().all(|c| c.is_alphanumeric() || ".-:[]".contains(c));
    if ok {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(StoreError::Invalid(format!("{field} `{host}` is not a host name or IP address")))
    }
}

/// Reads a secret (named `what` in errors) from a file, trailing newline removed, or from
/// an environment variable.
pub fn read_secret(what: &str, file: Option<&Path>, env_var: Option<&str>) -> Result<Secret, String> {
    match (file, env_var) {
        (Some(path), None) => std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
            .map_err(|e| format!("cannot read {what} file {}: {e}", path.display())),
        (None, Some(var)) => std::env::var(var)
            .map(Secret::new)
            .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)")),
        _ => Err(format!("give exactly one file or environment variable for the {what}")),
    }
}
