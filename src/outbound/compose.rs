//! Turning a send request into the exact bytes that will go out, once, at enqueue time:
//! validated addresses, no header injection, a Message-ID that never changes, threading
//! headers for replies. What is stored in the outbox is what the relay receives.

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use serde::Deserialize;

use crate::address::normalize_email;

/// A request to send mail for a user, as the CLI and the API take it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutgoingInput {
    /// The sending user's email address (their mail account's address).
    pub user: String,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
    /// Store id of the message this replies to (sets In-Reply-To and References).
    #[serde(default)]
    pub reply_to: Option<i64>,
    /// At most one record to link the sent message (and its thread) to.
    #[serde(default)]
    pub deal: Option<i64>,
    #[serde(default)]
    pub lead: Option<i64>,
    #[serde(default)]
    pub contact: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    pub filename: String,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The content, standard base64.
    pub content_base64: String,
}

fn default_content_type() -> String {
    "application/octet-stream".into()
}

/// Largest message accepted into the outbox (what most relays take).
pub const MAX_MESSAGE_BYTES: usize = 25 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ComposeError(pub String);

fn refuse(message: impl Into<String>) -> ComposeError {
    ComposeError(message.into())
}

/// A recipient: `ann@x.example` or `Ann Smith <ann@x.example>`; the address normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    pub name: Option<String>,
    pub address: String,
}

/// Refuses line breaks and other control characters in anything that becomes a header.
fn header_safe<'a>(field: &str, value: &'a str) -> Result<&'a str, ComposeError> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(refuse(format!("{field} contains a line break or control character (refused: header injection)")));
    }
    Ok(value)
}

pub fn parse_recipient(field: &str, input: &str) -> Result<Recipient, ComposeError> {
    let input = header_safe(field, input)?.trim();
    let (name, address) = match input.rfind('<') {
        Some(open) if input.ends_with('>') => {
            let name = input[..open].trim().trim_matches('"').trim();
            (Some(name.to_string()).filter(|n| !n.is_empty()), &input[open..])
        }
        _ => (None, input),
    };
    let address = normalize_email(address).map_err(|e| refuse(format!("{field}: {e}")))?;
    Ok(Recipient { name, address })
}

/// A composed message: the bytes to send and the envelope.
#[derive(Debug, Clone)]
pub struct Composed {
    /// Without angle brackets, as the store keeps Message-IDs.
    pub message_id: String,
    pub envelope_from: String,
    /// To, Cc and Bcc addresses, each once, in that order.
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
}

/// The text of a message: one part, or plain text and HTML as alternatives.
enum Body {
    Single(SinglePart),
    Alternative(MultiPart),
}

/// What the store knows of the message being replied to.
#[derive(Debug, Clone)]
pub struct ReplyContext {
    pub message_id: String,
    pub references: Vec<String>,
}

/// Builds the message. `from` is the user's address and display name.
pub fn compose(
    input: &OutgoingInput,
    from: &Recipient,
    reply: Option<&ReplyContext>,
    max_recipients: usize,
) -> Result<Composed, ComposeError> {
    let subject = header_safe("subject", &input.subject)?;
    let mut all = Vec::new();
    let mut lists: [Vec<Recipient>; 3] = Default::default();
    for (i, (field, values)) in [("to", &input.to), ("cc", &input.cc), ("bcc", &input.bcc)].into_iter().enumerate() {
        for v in values {
            let r = parse_recipient(field, v)?;
            if !all.contains(&r.address) {
                all.push(r.address.clone());
            }
            lists[i].push(r);
        }
    }
    if all.is_empty() {
        return Err(refuse("no recipient: give at least one of to, cc and bcc"));
    }
    if all.len() > max_recipients {
        return Err(refuse(format!(
            "{} recipients; at most {max_recipients} (sync.max_recipients: larger mailings are not CRM mail)",
            all.len()
        )));
    }
    let domain = crate::address::domain_of(&from.address);
    let mut random = [0u8; 16];
    crate::secrets::random_bytes(&mut random).map_err(|e| refuse(format!("no randomness for the Message-ID: {e}")))?;
    let message_id = format!("{}@{domain}", hex::encode(random));

    let mailbox = |r: &Recipient| -> Result<Mailbox, ComposeError> {
        let address = r.address.parse().map_err(|e| refuse(format!("`{}`: {e}", r.address)))?;
        Ok(Mailbox::new(r.name.clone(), address))
    };
    let mut builder = lettre::Message::builder()
        .from(mailbox(from)?)
        .subject(subject)
        .message_id(Some(format!("<{message_id}>")))
        .date_now();
    for r in &lists[0] {
        builder = builder.to(mailbox(r)?);
    }
    for r in &lists[1] {
        builder = builder.cc(mailbox(r)?);
    }
    for r in &lists[2] {
        builder = builder.bcc(mailbox(r)?);
    }
    if let Some(reply) = reply {
        builder = builder.in_reply_to(format!("<{}>", reply.message_id));
        let mut refs: Vec<&str> = reply.references.iter().map(String::as_str).collect();
        refs.push(&reply.message_id);
        let start = refs.len().saturating_sub(crate::ingest::MAX_REFERENCES);
        let refs: Vec<String> = refs[start..].iter().map(|r| format!("<{r}>")).collect();
        builder = builder.references(refs.join(" "));
    }
    let body = match (input.text.clone(), input.html.clone()) {
        (Some(text), Some(html)) => Body::Alternative(MultiPart::alternative_plain_html(text, html)),
        (Some(text), None) => Body::Single(SinglePart::plain(text)),
        (None, Some(html)) => Body::Single(SinglePart::html(html)),
        (None, None) => return Err(refuse("no body: give text, html or both")),
    };
    let message = if input.attachments.is_empty() {
        match body {
            Body::Single(part) => builder.singlepart(part),
            Body::Alternative(parts) => builder.multipart(parts),
        }
    } else {
        let mut mixed = match body {
            Body::Single(part) => MultiPart::mixed().singlepart(part),
            Body::Alternative(parts) => MultiPart::mixed().multipart(parts),
        };
        for a in &input.attachments {
            let filename = header_safe("attachment filename", &a.filename)?.to_string();
            let content_type = ContentType::parse(header_safe("attachment content_type", &a.content_type)?)
                .map_err(|e| refuse(format!("attachment {filename}: content_type: {e}")))?;
            let bytes = decode_base64(&a.content_base64)
                .ok_or_else(|| refuse(format!("attachment {filename}: content_base64 is not base64")))?;
            mixed = mixed.singlepart(Attachment::new(filename).body(bytes, content_type));
        }
        builder.multipart(mixed)
    }
    .map_err(|e| refuse(format!("cannot build the message: {e}")))?;
    let raw = message.formatted();
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(refuse(format!("the message is {} bytes; at most {MAX_MESSAGE_BYTES}", raw.len())));
    }
    Ok(Composed { message_id, envelope_from: from.address.clone(), recipients: all, raw })
}

/// Standard base64 with padding (the CLI hands attachments over as the API takes them).
pub fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding, whitespace ignored.
fn decode_base64(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    let mut padding = 0;
    for c in input.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            _ => return None,
        };
        if padding > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (padding <= 2).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> OutgoingInput {
        OutgoingInput {
            user: "kim@acme.example".into(),
            to: vec!["Ann <Ann@Client.example>".into()],
            bcc: vec!["boss@acme.example".into()],
            subject: "Offer".into(),
            text: Some("Hello".into()),
            ..OutgoingInput::default()
        }
    }

    fn kim() -> Recipient {
        Recipient { name: Some("Kim".into()), address: "kim@acme.example".into() }
    }

    #[test]
    fn composes_with_a_fixed_id_and_no_bcc_header() {
        let reply = ReplyContext { message_id: "m1@x".into(), references: vec!["m0@x".into()] };
        let c = compose(&input(), &kim(), Some(&reply), 100).unwrap();
        let text = String::from_utf8(c.raw.clone()).unwrap();
        assert!(text.contains(&format!("Message-ID: <{}>", c.message_id)), "{text}");
        assert!(text.contains("In-Reply-To: <m1@x>") && text.contains("References: <m0@x> <m1@x>"), "{text}");
        assert!(!text.to_lowercase().contains("boss@acme.example"), "Bcc stays out of the header: {text}");
        assert_eq!(c.recipients, ["ann@client.example", "boss@acme.example"]);
    }

    #[test]
    fn refuses_header_injection_and_bad_addresses() {
        for bad in [
            OutgoingInput { subject: "Hi\r\nBcc: victim@x.example".into(), ..input() },
            OutgoingInput { to: vec!["ann@client.example\r\nBcc: v@x.example".into()], ..input() },
            OutgoingInput { to: vec!["Ann\n <ann@client.example>".into()], ..input() },
            OutgoingInput { to: vec!["not an address".into()], ..input() },
            OutgoingInput { to: vec![], bcc: vec![], ..input() },
            OutgoingInput { text: None, ..input() },
        ] {
            assert!(compose(&bad, &kim(), None, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base64() {
        for sample in [&b""[..], b"he", b"hello", b"hello!", &[0u8, 255, 128, 7]] {
            assert_eq!(decode_base64(&encode_base64(sample)).unwrap(), sample);
        }
        assert_eq!(encode_base64(b"hello"), "aGVsbG8=");
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVs\nbG8h").unwrap(), b"hello!");
        assert!(decode_base64("a*b").is_none());
    }
}
