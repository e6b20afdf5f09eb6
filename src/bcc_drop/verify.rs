//! Is a dropped message really from its sender? Two ways to know, one per deployment:
//!
//! - The listener faces the Internet: DKIM (RFC 6376), SPF (RFC 7208) and DMARC
//!   (RFC 7489) are checked here with `mail-auth`. With a DMARC record, its verdict
//!   decides; without one, a DKIM signature of the From domain (or a parent of it) or an
//!   SPF pass for a MAIL FROM in the From domain is needed.
//! - The listener sits behind a trusted MTA: the first `Authentication-Results` header
//!   (RFC 8601), which must carry the configured authserv-id, decides with the same rule.
//!   That MTA must remove such headers from mail it receives (RFC 8601 section 5).

use std::net::IpAddr;

use mail_auth::dkim::Signature;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult};

use crate::config::BccDropConfig;

/// The verdict on a message's authentication, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVerdict {
    Pass(String),
    /// Permanently unauthenticated: refuse.
    Fail(String),
    /// A lookup failed: the client should retry later.
    TempFail(String),
}

pub enum Verifier {
    Dns { authenticator: Box<MessageAuthenticator>, hostname: String },
    TrustedMta { authserv_id: String },
}

/// What the listener knows of the message's transport.
pub struct Transport<'a> {
    pub peer_ip: IpAddr,
    pub helo: &'a str,
    pub mail_from: &'a str,
}

impl Verifier {
    pub fn from_config(config: &BccDropConfig, hostname: &str) -> Result<Verifier, String> {
        if !config.trusted_authserv_id.is_empty() {
            return Ok(Verifier::TrustedMta { authserv_id: config.trusted_authserv_id.clone() });
        }
        let servers = config.dns_server_addrs()?;
        let authenticator = if servers.is_empty() {
            MessageAuthenticator::new_system_conf()
        } else {
            let name_servers = servers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    server.connections.iter_mut().for_each(|c| c.port = addr.port());
                    server
                })
                .collect();
            MessageAuthenticator::new(ResolverConfig::from_parts(None, vec![], name_servers), ResolverOpts::default())
        }
        .map_err(|e| format!("cannot set up DNS resolution for DKIM/SPF/DMARC: {e}"))?;
        Ok(Verifier::Dns { authenticator: Box::new(authenticator), hostname: hostname.to_string() })
    }

    /// Checks `raw`, whose single From address is in `from_domain`.
    pub async fn check(&self, raw: &[u8], from_domain: &str, transport: &Transport<'_>) -> AuthVerdict {
        match self {
            Verifier::Dns { authenticator, hostname } => {
                check_dns(authenticator, hostname, raw, from_domain, transport).await
            }
            Verifier::TrustedMta { authserv_id } => check_trusted_header(authserv_id, raw, from_domain),
        }
    }
}

async fn check_dns(
    authenticator: &MessageAuthenticator,
    hostname: &str,
    raw: &[u8],
    from_domain: &str,
    transport: &Transport<'_>,
) -> AuthVerdict {
    let Some(message) = AuthenticatedMessage::parse(raw) else {
        return AuthVerdict::Fail("the message's header cannot be parsed".into());
    };
    let dkim = authenticator.verify_dkim(&message).await;
    let mail_from_domain = crate::address::domain_of(transport.mail_from);
    let spf = if transport.mail_from.is_empty() {
        None
    } else {
        let params = SpfParameters::verify_mail_from(transport.peer_ip, transport.helo, hostname, transport.mail_from);
        Some(authenticator.verify_spf(params).await)
    };
    let spf_result = spf.as_ref().map_or(SpfResult::None, |s| s.result());
    let dmarc = match &spf {
        Some(spf) => {
            authenticator
                .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(&message, &dkim, mail_from_domain, spf))
                .await
        }
        None => {
            let none = mail_auth::SpfOutput::new(String::new());
            authenticator.verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(&message, &dkim, "", &none)).await
        }
    };
    let dkim_words: Vec<String> = dkim.iter().map(|o| dkim_word(o.result(), o.signature())).collect();
    let summary = format!(
        "dkim={} spf={} dmarc={}",
        if dkim_words.is_empty() { "none".to_string() } else { dkim_words.join(",") },
        spf_word(spf_result),
        dmarc_word(&dmarc.result()),
    );
    if dmarc.dmarc_record().is_some() {
        return match (dmarc.dkim_result(), dmarc.spf_result()) {
            (DmarcResult::Pass, _) | (_, DmarcResult::Pass) => AuthVerdict::Pass(summary),
            (DmarcResult::TempError(_), _) | (_, DmarcResult::TempError(_)) => AuthVerdict::TempFail(summary),
            _ => AuthVerdict::Fail(format!("DMARC fails for {from_domain}: {summary}")),
        };
    }
    let dkim_aligned = dkim
        .iter()
        .any(|o| *o.result() == DkimResult::Pass && o.signature().is_some_and(|s| aligned(&s.d, from_domain)));
    let spf_aligned = spf_result == SpfResult::Pass && mail_from_domain.eq_ignore_ascii_case(from_domain);
    if dkim_aligned || spf_aligned {
        return AuthVerdict::Pass(summary);
    }
    if dkim.iter().any(|o| matches!(o.result(), DkimResult::TempError(_))) || spf_result == SpfResult::TempError {
        return AuthVerdict::TempFail(summary);
    }
    AuthVerdict::Fail(format!("no DKIM signature or SPF pass for {from_domain}: {summary}"))
}

/// A signing or authenticated domain speaks for `from_domain` when it is that domain or
/// a parent of it (DMARC's relaxed alignment, without the public-suffix list: a parent
/// must have a dot, so `com` never speaks for `example.com`).
fn aligned(domain: &str, from_domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let from = from_domain.trim_end_matches('.').to_ascii_lowercase();
    domain == from || (domain.contains('.') && from.ends_with(&format!(".{domain}")))
}

fn dkim_word(result: &DkimResult, signature: Option<&Signature>) -> String {
    let word = match result {
        DkimResult::Pass => "pass".to_string(),
        DkimResult::Neutral(e) => format!("neutral ({e})"),
        DkimResult::Fail(e) => format!("fail ({e})"),
        DkimResult::PermError(e) => format!("permerror ({e})"),
        DkimResult::TempError(e) => format!("temperror ({e})"),
        DkimResult::None => "none".to_string(),
    };
    match signature {
        Some(s) => format!("{word} d={}", s.d),
        None => word,
    }
}

fn spf_word(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dmarc_word(result: &DmarcResult) -> &'static str {
    match result {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

/// The trusted MTA's verdict from the first `Authentication-Results` header.
fn check_trusted_header(authserv_id: &str, raw: &[u8], from_domain: &str) -> AuthVerdict {
    let Some(value) = first_header(raw, "authentication-results") else {
        return AuthVerdict::Fail(format!("no Authentication-Results header from the trusted MTA {authserv_id}"));
    };
    let results = parse_authentication_results(&value);
    if !results.authserv_id.eq_ignore_ascii_case(authserv_id) {
        return AuthVerdict::Fail(format!(
            "the first Authentication-Results header is from {:?}, not the trusted MTA {authserv_id}",
            results.authserv_id
        ));
    }
    let summary = results.methods.iter().map(|m| format!("{}={}", m.method, m.result)).collect::<Vec<_>>().join(" ");
    let pass = results.methods.iter().any(|m| {
        m.result == "pass"
            && match m.method.as_str() {
                "dmarc" => m.property("header.from").is_none_or(|d| aligned(d, from_domain)),
                "dkim" => m
                    .property("header.d")
                    .or(m.property("header.i").map(crate::address::domain_of))
                    .is_some_and(|d| aligned(d, from_domain)),
                "spf" => m.property("smtp.mailfrom").is_some_and(|f| {
                    let domain = if f.contains('@') { crate::address::domain_of(f) } else { f };
                    domain.eq_ignore_ascii_case(from_domain)
                }),
                _ => false,
            }
    });
    if pass {
        AuthVerdict::Pass(format!("{authserv_id}: {summary}"))
    } else {
        AuthVerdict::Fail(format!(
            "{authserv_id} did not authenticate {from_domain}: {}",
            if summary.is_empty() { "no results" } else { &summary }
        ))
    }
}

/// The unfolded value of the first header field called `name` in the header block.
fn first_header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let Some((field, value)) = line.split_once(':') else { continue };
        if !field.trim_end().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = value.to_string();
        while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
            value.push(' ');
            value.push_str(next.trim());
            lines.next();
        }
        return Some(value);
    }
    None
}

#[derive(Debug, Default, PartialEq)]
struct AuthResults {
    authserv_id: String,
    methods: Vec<MethodResult>,
}

#[derive(Debug, PartialEq)]
struct MethodResult {
    method: String,
    result: String,
    properties: Vec<(String, String)>,
}

impl MethodResult {
    fn property(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses an `Authentication-Results` value (RFC 8601 section 2.2): comments removed,
/// `authserv-id [version]; method=result [reason=...] [ptype.property=value ...]; ...`.
fn parse_authentication_results(value: &str) -> AuthResults {
    let mut clean = String::with_capacity(value.len());
    let (mut depth, mut quoted) = (0u32, false);
    for c in value.chars() {
        match c {
            '"' if depth == 0 => {
                quoted = !quoted;
                clean.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let mut segments = clean.split(';');
    let authserv_id = segments.next().and_then(|s| s.split_whitespace().next()).unwrap_or("").to_string();
    let methods = segments
        .filter_map(|segment| {
            let mut tokens = segment.split_whitespace();
            let (method, result) = tokens.next()?.split_once('=')?;
            let method = method.split('/').next().unwrap_or(method).to_ascii_lowercase();
            let properties = tokens
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim_matches('"').to_string()))
                .collect();
            Some(MethodResult { method, result: result.to_ascii_lowercase(), properties })
        })
        .collect();
    AuthResults { authserv_id, methods }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "Authentication-Results: mx.example.net (comment; with semicolon);\r\n \
        dkim=pass (good sig) header.d=phone.example header.s=sel;\r\n spf=fail smtp.mailfrom=x@other.example\r\n\
        Authentication-Results: mx.example.net; dkim=fail\r\nFrom: a@phone.example\r\n\r\nbody\r\n";

    #[test]
    fn parses_the_first_header_with_comments_and_folding() {
        let value = first_header(MESSAGE.as_bytes(), "authentication-results").unwrap();
        let results = parse_authentication_results(&value);
        assert_eq!(results.authserv_id, "mx.example.net");
        assert_eq!(results.methods.len(), 2);
        assert_eq!(results.methods[0].method, "dkim");
        assert_eq!(results.methods[0].property("header.d"), Some("phone.example"));
        assert_eq!(results.methods[1].result, "fail");
    }

    #[test]
    fn trusted_header_decides_with_alignment() {
        let pass = check_trusted_header("mx.example.net", MESSAGE.as_bytes(), "phone.example");
        assert!(matches!(pass, AuthVerdict::Pass(_)), "{pass:?}");
        let other_domain = check_trusted_header("mx.example.net", MESSAGE.as_bytes(), "evil.example");
        assert!(matches!(other_domain, AuthVerdict::Fail(_)), "{other_domain:?}");
        let untrusted = check_trusted_header("mx.other.net", MESSAGE.as_bytes(), "phone.example");
        assert!(matches!(untrusted, AuthVerdict::Fail(ref r) if r.contains("mx.example.net")), "{untrusted:?}");
        let none = check_trusted_header("mx.example.net", b"From: a@phone.example\r\n\r\nx", "phone.example");
        assert!(matches!(none, AuthVerdict::Fail(_)));
    }

    #[test]
    fn alignment_needs_the_domain_or_a_parent() {
        assert!(aligned("example.com", "example.com"));
        assert!(aligned("example.com", "mail.example.com"));
        assert!(aligned("Example.COM.", "example.com"));
        assert!(!aligned("com", "example.com"));
        assert!(!aligned("ample.com", "example.com"));
        assert!(!aligned("mail.example.com", "example.com"));
    }
}
