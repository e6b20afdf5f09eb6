//! A local OAuth 2.0 authorization server, for XOAUTH2 tests. It follows:
//! - RFC 6749, section 6 (refreshing an access token), with the success and error
//!   responses of sections 5.1 and 5.2 (`invalid_grant` for an unknown refresh token);
//!   client authentication by HTTP Basic (section 2.3.1) or client_id in the body;
//! - RFC 7662 (token introspection): `POST token=...` answered `{"active": ..., "username"}`,
//!   which Dovecot's oauth2 passdb calls with `introspection_mode = post`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

#[derive(Default)]
struct Grants {
    /// refresh token -> user
    refresh: HashMap<String, String>,
    /// access token -> (user, expiry)
    access: HashMap<String, (String, Instant)>,
    issued: u64,
    refreshes: usize,
    /// Access tokens introspected as active, in order.
    accepted: Vec<String>,
}

pub struct OAuthServer {
    pub port: u16,
    lifetime: Duration,
    grants: Arc<Mutex<Grants>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OAuthServer {
    /// Starts the server; access tokens it issues expire after `lifetime`.
    pub fn start(lifetime: Duration) -> OAuthServer {
        let grants = Arc::new(Mutex::new(Grants::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = (grants.clone(), lifetime);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let app =
                    Router::new().route("/token", post(token)).route("/introspect", post(introspect)).with_state(state);
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        OAuthServer { port, lifetime, grants, stop: Some(stop), thread: Some(thread) }
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn introspection_url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.port)
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn grant(&self, refresh_token: &str, user: &str) {
        self.grants.lock().unwrap().refresh.insert(refresh_token.into(), user.into());
    }

    pub fn revoke(&self, refresh_token: &str) {
        self.grants.lock().unwrap().refresh.remove(refresh_token);
    }

    /// Revokes every access token issued so far (RFC 7009 revocation by the provider);
    /// refresh tokens stay valid, so a client that refreshes recovers.
    pub fn revoke_access_tokens(&self) {
        self.grants.lock().unwrap().access.clear();
    }

    pub fn refreshes(&self) -> usize {
        self.grants.lock().unwrap().refreshes
    }

    /// Whether a bearer token is a live access token of this server (for resource
    /// servers in the same test, such as the Google People fake).
    pub fn validator(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let grants = self.grants.clone();
        move |token: &str| grants.lock().unwrap().access.get(token).is_some_and(|(_, expiry)| *expiry > Instant::now())
    }

    pub fn accepted_tokens(&self) -> Vec<String> {
        self.grants.lock().unwrap().accepted.clone()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type AppState = (Arc<Mutex<Grants>>, Duration);

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

async fn token(State((grants, lifetime)): State<AppState>, body: String) -> Response {
    let form = parse_form(&body);
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "unsupported_grant_type"}));
    }
    let mut g = grants.lock().unwrap();
    let Some(user) = form.get("refresh_token").and_then(|t| g.refresh.get(t)).cloned() else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_grant", "error_description": "unknown or revoked refresh token"}),
        );
    };
    g.issued += 1;
    g.refreshes += 1;
    let access = format!("at-{}", g.issued);
    g.access.insert(access.clone(), (user, Instant::now() + lifetime));
    json(
        StatusCode::OK,
        serde_json::json!({"access_token": access, "token_type": "Bearer", "expires_in": lifetime.as_secs()}),
    )
}

async fn introspect(State((grants, _)): State<AppState>, body: String) -> Response {
    let form = parse_form(&body);
    let mut g = grants.lock().unwrap();
    let token = form.get("token").cloned().unwrap_or_default();
    match g.access.get(&token).cloned() {
        Some((user, expiry)) if expiry > Instant::now() => {
            g.accepted.push(token);
            json(StatusCode::OK, serde_json::json!({"active": true, "username": user}))
        }
        _ => json(StatusCode::OK, serde_json::json!({"active": false})),
    }
}

/// application/x-www-form-urlencoded, as RFC 6749 appendix B specifies.
fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((decode(k), decode(v)))
        })
        .collect()
}

pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
