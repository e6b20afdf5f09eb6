//! Turning message bytes into what the store keeps: ids, participants, threading headers,
//! text bodies and attachment metadata. Parsing never fails: what cannot be read is left
//! empty, and a message without a Message-ID gets a stable synthesized one.

use std::collections::HashSet;

use mail_parser::{Address, HeaderValue, Message, MessageParser, MimeHeaders};

use crate::address::normalize_email;
use crate::model::message::{AttachmentMeta, MAX_REFERENCES, ParsedMessage, Participant, Role};

/// A decoded-on-demand text part: its MIME headers as the server described them, and
/// its still-encoded bytes.
#[derive(Debug, Clone)]
pub struct TextPart {
    pub subtype: String,
    pub charset: String,
    pub transfer_encoding: String,
    pub bytes: Vec<u8>,
}

/// Distinct recipient addresses in To, Cc and Bcc of a header block.
pub fn recipient_count(header: &[u8]) -> usize {
    let parser = MessageParser::default();
    let Some(message) = parser.parse_headers(header) else { return 0 };
    let mut seen = HashSet::new();
    for address in [message.to(), message.cc(), message.bcc()].into_iter().flatten() {
        for addr in address.iter() {
            if let Some(a) = addr.address().and_then(|a| normalize_email(a).ok()) {
                seen.insert(a);
            }
        }
    }
    seen.len()
}

/// The header block of a whole message, up to and including the blank line that ends it.
pub(super) fn header_block(raw: &[u8]) -> &[u8] {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let end = [crlf, lf].into_iter().flatten().min().unwrap_or(raw.len());
    &raw[..end]
}

/// Parses a header block plus separately fetched text parts (the IMAP path).
pub(super) fn parse_parts(
    header: &[u8],
    parts: &[TextPart],
    size: i64,
    attachments: Vec<AttachmentMeta>,
) -> ParsedMessage {
    let parser = MessageParser::default();
    let mut parsed = match parser.parse_headers(header) {
        Some(message) => from_headers(&message),
        None => ParsedMessage::default(),
    };
    for part in parts {
        let text = decode_part(&parser, part);
        let slot =
            if part.subtype.eq_ignore_ascii_case("html") { &mut parsed.body_html } else { &mut parsed.body_text };
        if slot.is_empty() {
            *slot = text;
        } else if !text.is_empty() {
            slot.push_str("\n\n");
            slot.push_str(&text);
        }
    }
    parsed.size = size;
    parsed.attachments = attachments;
    finish(parsed)
}

/// Parses a complete message (the BCC-drop and outbound paths).
pub(super) fn parse_raw(raw: &[u8]) -> ParsedMessage {
    let Some(message) = MessageParser::default().parse(raw) else {
        return finish(ParsedMessage { size: raw.len() as i64, ..Default::default() });
    };
    let mut parsed = from_headers(&message);
    parsed.size = raw.len() as i64;
    parsed.body_text = message.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    parsed.body_html = message.body_html(0).map(|t| t.into_owned()).unwrap_or_default();
    parsed.attachments = message
        .attachments()
        .enumerate()
        .map(|(i, part)| AttachmentMeta {
            part_id: (i + 1).to_string(),
            filename: part.attachment_name().unwrap_or_default().to_string(),
            content_type: part
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")))
                .unwrap_or_default()
                .to_ascii_lowercase(),
            size: part.len() as i64,
        })
        .collect();
    finish(parsed)
}

fn from_headers(message: &Message<'_>) -> ParsedMessage {
    let mut participants = Vec::new();
    for (role, address) in
        [(Role::From, message.from()), (Role::To, message.to()), (Role::Cc, message.cc()), (Role::Bcc, message.bcc())]
    {
        push_participants(&mut participants, role, address);
    }
    let mut references: Vec<String> = ids(message.references());
    if references.len() > MAX_REFERENCES {
        references.drain(..references.len() - MAX_REFERENCES);
    }
    ParsedMessage {
        message_id: message.message_id().map(clean_id).unwrap_or_default(),
        subject: message.subject().unwrap_or_default().trim().to_string(),
        sent_at: message.date().map(|d| d.to_timestamp().saturating_mul(1000)).unwrap_or(0),
        in_reply_to: ids(message.in_reply_to()).into_iter().next().unwrap_or_default(),
        references,
        gm_thrid: message.header_raw("X-GM-THRID").map(|v| v.trim().to_string()).unwrap_or_default(),
        participants,
        ..Default::default()
    }
}

fn push_participants(out: &mut Vec<Participant>, role: Role, address: Option<&Address<'_>>) {
    let Some(address) = address else { return };
    for addr in address.iter() {
        let Some(email) = addr.address().and_then(|a| normalize_email(a).ok()) else { continue };
        if out.iter().any(|p| p.role == role && p.address == email) {
            continue;
        }
        let name = addr.name().unwrap_or_default().trim().to_string();
        out.push(Participant { role, address: email, name });
    }
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    value.as_text_list().map(|l| l.iter().map(|s| clean_id(s)).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
}

fn clean_id(id: &str) -> String {
    id.trim().trim_start_matches('<').trim_end_matches('>').trim().to_string()
}

/// A message without a Message-ID gets one derived from what every copy of it shares,
/// so copies arriving by IMAP and by BCC drop still deduplicate.
fn finish(mut parsed: ParsedMessage) -> ParsedMessage {
    if parsed.message_id.is_empty() {
        let from = parsed.participants.iter().find(|p| p.role == Role::From).map_or("", |p| p.address.as_str());
        let key = format!("{}\n{}\n{}\n{}", parsed.sent_at, from, parsed.subject, parsed.body_text.trim());
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        parsed.message_id = format!("{}@generated.mailsync.invalid", hex::encode(&digest.as_ref()[..16]));
    }
    parsed
}

fn decode_part(parser: &MessageParser, part: &TextPart) -> String {
    // Wrap the part in its own MIME headers and let mail-parser do the transfer and
    // charset decoding, so every path decodes the same way.
    let mut synthetic = format!(
        "Content-Type: text/{}; charset=\"{}\"\r\nContent-Transfer-Encoding: {}\r\n\r\n",
        sanitize(&part.subtype, "plain"),
        sanitize(&part.charset, "utf-8"),
        sanitize(&part.transfer_encoding, "7bit"),
    )
    .into_bytes();
    synthetic.extend_from_slice(&part.bytes);
    let Some(message) = parser.parse(&synthetic) else { return String::new() };
    let text = if part.subtype.eq_ignore_ascii_case("html") { message.body_html(0) } else { message.body_text(0) };
    text.map(|t| t.into_owned()).unwrap_or_default()
}

/// Keeps a server-provided MIME parameter from injecting header lines.
fn sanitize<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:+".contains(c)) {
        default
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "From: Ann <Ann@Example.com>\r\nTo: bo@client.example, \"Cy\" <cy@client.example>\r\n\
        Cc: undisclosed-recipients:;\r\nSubject: Re: quote\r\nMessage-ID: <abc@example.com>\r\n\
        In-Reply-To: <parent@example.com>\r\nReferences: <root@example.com> <parent@example.com>\r\n\
        Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n";

    #[test]
    fn raw_messages() {
        let p = parse_raw(RAW.as_bytes());
        assert_eq!(p.message_id, "abc@example.com");
        assert_eq!(p.in_reply_to, "parent@example.com");
        assert_eq!(p.references, vec!["root@example.com", "parent@example.com"]);
        assert_eq!(p.subject, "Re: quote");
        assert_eq!(p.sent_at, 1_795_255_200_000);
        assert_eq!(p.participants.len(), 3);
        assert_eq!(
            p.participants[0],
            Participant { role: Role::From, address: "ann@example.com".into(), name: "Ann".into() }
        );
        assert_eq!(p.body_text.trim(), "Hello");
    }

    #[test]
    fn recipients_are_distinct_addresses() {
        let header = "To: a@x.com, A@X.com, b@x.com\r\nCc: c@x.com\r\nBcc: b@x.com, d@x.com\r\n\r\n";
        assert_eq!(recipient_count(header.as_bytes()), 4);
    }

    #[test]
    fn parts_are_decoded_by_their_own_encoding() {
        let header = b"From: a@x.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n";
        let parts = [
            TextPart {
                subtype: "plain".into(),
                charset: "iso-8859-1".into(),
                transfer_encoding: "quoted-printable".into(),
                bytes: b"caf=E9".to_vec(),
            },
            TextPart {
                subtype: "html".into(),
                charset: "utf-8".into(),
                transfer_encoding: "base64".into(),
                bytes: b"PGI+aGk8L2I+".to_vec(),
            },
        ];
        let p = parse_parts(header, &parts, 42, vec![]);
        assert_eq!(p.subject, "café");
        assert_eq!(p.body_text.trim(), "café");
        assert_eq!(p.body_html.trim(), "<b>hi</b>");
        assert!(p.message_id.ends_with("@generated.mailsync.invalid"), "synthesized id");
        assert_eq!(p.message_id, parse_parts(header, &parts, 42, vec![]).message_id, "stable");
    }

    #[test]
    fn hostile_references_are_capped() {
        let refs: String = (0..100).map(|i| format!("<r{i}@x>")).collect::<Vec<_>>().join(" ");
        let raw = format!("From: a@x.com\r\nReferences: {refs}\r\n\r\nbody");
        let p = parse_raw(raw.as_bytes());
        assert_eq!(p.references.len(), MAX_REFERENCES);
        assert_eq!(p.references.last().unwrap(), "r99@x");
    }
}
