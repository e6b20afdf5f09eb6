//! OAuth2 for XOAUTH2 accounts: provider presets, and a token source that refreshes the
//! access token with the `oauth2` crate (RFC 6749 section 6) and keeps both tokens sealed
//! in the store.

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{ClientId, ClientSecret, RefreshToken, RequestTokenError, TokenResponse, TokenUrl};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::imap::{ErrorClass, SyncError};
use crate::secrets::{MasterKey, Secret};
use crate::store::{Store, now_ms};

/// Sealing purposes of the stored OAuth secrets.
pub const REFRESH_TOKEN_PURPOSE: &str = "oauth-refresh-token";
pub const ACCESS_TOKEN_PURPOSE: &str = "oauth-access-token";
pub const CLIENT_SECRET_PURPOSE: &str = "oauth-client-secret";

/// A token is refreshed this long before it expires (or a quarter of its lifetime, if
/// that is shorter).
const EXPIRY_MARGIN_MS: i64 = 60_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Google,
    Microsoft,
    /// Any RFC 6749 token endpoint, given by URL.
    Custom,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Microsoft => "microsoft",
            Provider::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "google" => Some(Provider::Google),
            "microsoft" => Some(Provider::Microsoft),
            "custom" => Some(Provider::Custom),
            _ => None,
        }
    }

    /// The preset token endpoint (Google's and Microsoft's published ones).
    pub fn token_url(self) -> Option<&'static str> {
        match self {
            Provider::Google => Some("https://oauth2.googleapis.com/token"),
            Provider::Microsoft => Some("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
            Provider::Custom => None,
        }
    }
}

/// Checks a token endpoint: HTTPS, or plain HTTP only on a loopback address.
pub fn validate_token_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("token URL `{url}` is not a URL: {e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(url.to_string()),
        "http" if loopback => Ok(url.to_string()),
        _ => Err(format!("token URL `{url}` must use https (plain http only on loopback)")),
    }
}

/// Gives out a valid access token for one account, refreshing it when needed. Shared by
/// the account's folder tasks, so one refresh serves both.
pub struct TokenSource {
    store: Store,
    key: std::sync::Arc<MasterKey>,
    account_id: i64,
    token_url: String,
    client_id: String,
    client_secret: Option<Secret>,
    http: reqwest::Client,
    /// The current token and when to refresh it (unix ms).
    cached: Mutex<Option<(Secret, i64)>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").field("account_id", &self.account_id).field("token_url", &self.token_url).finish()
    }
}

impl TokenSource {
    pub async fn new(store: Store, key: std::sync::Arc<MasterKey>, account_id: i64) -> Result<TokenSource, SyncError> {
        let settings = store.oauth_settings(account_id).await?;
        let client_secret = if settings.client_secret.is_empty() {
            None
        } else {
            Some(open(&key, CLIENT_SECRET_PURPOSE, &settings.client_secret)?)
        };
        let cached = if settings.access_token.is_empty() {
            None
        } else {
            let refresh_at = settings.access_token_expires_at - EXPIRY_MARGIN_MS;
            Some((open(&key, ACCESS_TOKEN_PURPOSE, &settings.access_token)?, refresh_at))
        };
        let http = reqwest::Client::builder()
            // RFC 6749 token responses are never redirects; following one could leak the grant.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| SyncError::new(ErrorClass::Network, format!("HTTP client: {e}")))?;
        Ok(TokenSource {
            store,
            key,
            account_id,
            token_url: settings.token_url,
            client_id: settings.client_id,
            client_secret,
            http,
            cached: Mutex::new(cached),
        })
    }

    /// A token valid for at least another minute.
    pub async fn access_token(&self) -> Result<Secret, SyncError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = cached.as_ref()
            && *refresh_at > now_ms()
        {
            return Ok(token.clone());
        }
        let (token, refresh_at) = self.refresh().await?;
        *cached = Some((token.clone(), refresh_at));
        Ok(token)
    }

    /// Forgets the cached token (the server refused it), so the next call refreshes.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn refresh(&self) -> Result<(Secret, i64), SyncError> {
        let sealed = self.store.account_secret(self.account_id).await?;
        let refresh_token = open(&self.key, REFRESH_TOKEN_PURPOSE, &sealed)?;
        let token_url = TokenUrl::new(self.token_url.clone())
            .map_err(|e| SyncError::new(ErrorClass::Protocol, format!("token URL: {e}")))?;
        let mut client = BasicClient::new(ClientId::new(self.client_id.clone())).set_token_uri(token_url);
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_string()));
        }
        let response = client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.expose().to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    let class = match r.error() {
                        BasicErrorResponseType::InvalidGrant | BasicErrorResponseType::UnauthorizedClient => {
                            ErrorClass::AuthFailed
                        }
                        BasicErrorResponseType::InvalidClient => ErrorClass::AuthFailed,
                        _ => ErrorClass::Protocol,
                    };
                    let detail = r.error_description().cloned().unwrap_or_default();
                    SyncError::new(
                        class,
                        format!(
                            "the token endpoint refused the refresh token ({}{}); reconnect the account's OAuth grant",
                            r.error().as_ref(),
                            if detail.is_empty() { String::new() } else { format!(": {detail}") }
                        ),
                    )
                }
                RequestTokenError::Request(e) => {
                    SyncError::new(ErrorClass::Network, format!("token endpoint unreachable: {e}"))
                }
                other => SyncError::new(ErrorClass::Protocol, format!("token endpoint: {other}")),
            })?;
        let token = Secret::new(response.access_token().secret().clone());
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(3600));
        let expires_at = now_ms() + lifetime.as_millis() as i64;
        let seal = |purpose: &str, secret: &Secret| {
            self.key.seal(purpose, secret).map_err(|e| SyncError::new(ErrorClass::Secret, e.to_string()))
        };
        let rotated = match response.refresh_token() {
            Some(new) if new.secret() != refresh_token.expose() => {
                Some(seal(REFRESH_TOKEN_PURPOSE, &Secret::new(new.secret().clone()))?)
            }
            _ => None,
        };
        self.store
            .save_oauth_tokens(self.account_id, &seal(ACCESS_TOKEN_PURPOSE, &token)?, expires_at, rotated.as_deref())
            .await?;
        tracing::info!(
            account = self.account_id,
            expires_in_s = lifetime.as_secs(),
            rotated = rotated.is_some(),
            "OAuth access token refreshed"
        );
        let margin = EXPIRY_MARGIN_MS.min(lifetime.as_millis() as i64 / 4);
        Ok((token, expires_at - margin))
    }
}

fn open(key: &MasterKey, purpose: &str, sealed: &[u8]) -> Result<Secret, SyncError> {
    key.open(purpose, sealed).map_err(|e| SyncError::new(ErrorClass::Secret, e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_urls_need_tls_except_on_loopback() {
        assert!(super::validate_token_url("https://oauth2.googleapis.com/token").is_ok());
        assert!(super::validate_token_url("http://127.0.0.1:8080/token").is_ok());
        assert!(super::validate_token_url("http://localhost/token").is_ok());
        assert!(super::validate_token_url("http://auth.example.com/token").is_err());
        assert!(super::validate_token_url("not a url").is_err());
    }
}
