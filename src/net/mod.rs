//! Network plumbing shared by every protocol client: TCP with timeouts and keepalive,
//! and TLS with verified certificates.
//!
//! Architecture invariant: nothing here (or in any protocol module) touches the store.

pub mod timeout;
pub mod tls;

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// Why a connection could not be opened, in the words an operator needs.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("connection to {addr} refused (nothing listens on that port)")]
    Refused { addr: String },
    #[error("connection to {addr} timed out after {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("cannot connect to {addr}: {reason}")]
    Other { addr: String, reason: String },
}

impl ConnectError {
    /// Wrong host or port are permanent until the account is changed; a timeout or an
    /// unreachable network may pass.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Timeout { .. } | ConnectError::Other { .. })
    }
}

/// Whether `host` (a name or an address, IPv6 with or without brackets) is this
/// machine: the one place credentials may travel without TLS.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Opens a TCP connection with a deadline and TCP keepalive, trying each resolved address.
pub async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let addr = format!("{host}:{port}");
    let attempt = async {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::Dns { host: host.to_string(), reason: e.to_string() })?;
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => ConnectError::Refused { addr: addr.clone() },
            Some(e) => ConnectError::Other { addr: addr.clone(), reason: e.to_string() },
            None => ConnectError::Dns { host: host.to_string(), reason: "no addresses".into() },
        })
    };
    let stream = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout { addr: addr.clone(), secs: timeout.as_secs() })??;
    let keepalive =
        socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(15));
    // Keepalive is an optimisation for dead-peer detection; read timeouts remain the guard.
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "could not enable TCP keepalive");
    }
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
