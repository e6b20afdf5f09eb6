//! Fetching a batch of messages in few round trips: first `RFC822.SIZE`, `BODYSTRUCTURE`
//! and the header of every UID in the batch (one command); the ingest screen then decides
//! what is skipped; then only the text parts of the rest, one command per distinct part
//! layout. Attachments are recorded from BODYSTRUCTURE and never downloaded.

use std::collections::{BTreeMap, HashMap};

use async_imap::types::Fetch;
use futures_util::TryStreamExt;
use imap_proto::{BodyStructure, SectionPath};

use super::connection::{ImapIo, ImapSession};
use super::error::SyncError;
use crate::ingest::{
    self, AttachmentMeta, Incoming, ParsedMessage, Prepared, Screen, SkipReason, SourceFixup, TextPart,
};

/// Most text parts read per message; more is a hostile or broken structure.
const MAX_TEXT_PARTS: usize = 4;
/// Deepest MIME nesting walked.
const MAX_DEPTH: usize = 12;

/// What a batch fetch produced, by UID.
#[derive(Debug, Default)]
pub struct FetchedBatch {
    pub messages: Vec<(u32, ParsedMessage)>,
    pub skipped: Vec<(u32, SkipReason, u64)>,
    /// IMAP commands sent for this batch, for the benchmarks.
    pub commands: usize,
}

/// A text part to fetch: its section (`1`, `1.2`, ...) and how to decode it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PartSpec {
    section: Vec<u32>,
    subtype: String,
    charset: String,
    encoding: String,
}

struct Layout {
    size: u64,
    header: Vec<u8>,
    text_parts: Vec<PartSpec>,
    attachments: Vec<AttachmentMeta>,
}

/// Fetches and parses the messages `uids` (which must exist) of the selected folder.
pub async fn fetch_batch<S: ImapIo>(
    session: &mut ImapSession<S>,
    uids: &[u32],
    screen: &Screen,
    max_text_bytes: u32,
) -> Result<FetchedBatch, SyncError> {
    let mut batch = FetchedBatch::default();
    if uids.is_empty() {
        return Ok(batch);
    }
    let started = std::time::Instant::now();
    let set = uid_set(uids);
    let fetches = collect(session, &set, "(UID RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER])").await?;
    batch.commands += 1;
    let structure_ms = started.elapsed().as_millis() as u64;
    let mut layouts: BTreeMap<u32, Layout> = BTreeMap::new();
    for fetch in &fetches {
        let Some(uid) = fetch.uid else { continue };
        let size = u64::from(fetch.size.unwrap_or(0));
        let header = fetch.header().unwrap_or_default().to_vec();
        if let Some(reason) = screen.check(&header) {
            batch.skipped.push((uid, reason, size));
            continue;
        }
        let mut layout = Layout { size, header, text_parts: Vec::new(), attachments: Vec::new() };
        if let Some(structure) = fetch.bodystructure() {
            walk(structure, &mut Vec::new(), 0, &mut layout);
        }
        layouts.insert(uid, layout);
    }

    // One FETCH per distinct set of text sections: most mail shares a handful of layouts.
    let mut groups: HashMap<Vec<Vec<u32>>, Vec<u32>> = HashMap::new();
    for (uid, layout) in &layouts {
        let key: Vec<Vec<u32>> = layout.text_parts.iter().map(|p| p.section.clone()).collect();
        if !key.is_empty() {
            groups.entry(key).or_default().push(*uid);
        }
    }
    let mut bodies: HashMap<(u32, Vec<u32>), Vec<u8>> = HashMap::new();
    for (sections, group_uids) in groups {
        let items: Vec<String> =
            sections.iter().map(|s| format!("BODY.PEEK[{}]<0.{max_text_bytes}>", section_name(s))).collect();
        let query = format!("(UID {})", items.join(" "));
        for fetch in collect(session, &uid_set(&group_uids), &query).await? {
            let Some(uid) = fetch.uid else { continue };
            for section in &sections {
                if let Some(data) = fetch.section(&SectionPath::Part(section.clone(), None)) {
                    bodies.insert((uid, section.clone()), data.to_vec());
                }
            }
        }
        batch.commands += 1;
    }

    let parts_ms = started.elapsed().as_millis() as u64 - structure_ms;
    for (uid, layout) in layouts {
        let parts: Vec<TextPart> = layout
            .text_parts
            .iter()
            .map(|p| TextPart {
                subtype: p.subtype.clone(),
                charset: p.charset.clone(),
                transfer_encoding: p.encoding.clone(),
                bytes: bodies.remove(&(uid, p.section.clone())).unwrap_or_default(),
            })
            .collect();
        let incoming = Incoming::Fetched {
            header: &layout.header,
            text_parts: &parts,
            size: layout.size as i64,
            attachments: layout.attachments,
        };
        match ingest::prepare(incoming, screen, SourceFixup::None) {
            Prepared { message, skip: None } => batch.messages.push((uid, message)),
            Prepared { skip: Some(reason), .. } => batch.skipped.push((uid, reason, layout.size)),
        }
    }
    tracing::debug!(
        messages = uids.len(),
        structure_ms,
        parts_ms,
        parse_ms = started.elapsed().as_millis() as u64 - structure_ms - parts_ms,
        "batch fetched"
    );
    Ok(batch)
}

/// Runs `UID FETCH set query` and drains the response stream to its end.
async fn collect<S: ImapIo>(session: &mut ImapSession<S>, set: &str, query: &str) -> Result<Vec<Fetch>, SyncError> {
    let fetches: Vec<Fetch> = session.uid_fetch(set, query).await?.try_collect().await?;
    Ok(fetches)
}

fn walk(structure: &BodyStructure<'_>, path: &mut Vec<u32>, depth: usize, layout: &mut Layout) {
    if depth > MAX_DEPTH {
        return;
    }
    // A non-multipart message has its body as part 1.
    let section = if path.is_empty() { vec![1] } else { path.clone() };
    match structure {
        BodyStructure::Multipart { bodies, .. } => {
            for (i, body) in bodies.iter().enumerate() {
                path.push(i as u32 + 1);
                walk(body, path, depth + 1, layout);
                path.pop();
            }
        }
        BodyStructure::Text { common, other, .. } => {
            let subtype = common.ty.subtype.to_ascii_lowercase();
            let inline = !common.disposition.as_ref().is_some_and(|d| d.ty.eq_ignore_ascii_case("attachment"));
            if inline && (subtype == "plain" || subtype == "html") && layout.text_parts.len() < MAX_TEXT_PARTS {
                layout.text_parts.push(PartSpec {
                    section,
                    subtype,
                    charset: param(&common.ty.params, "charset").unwrap_or_else(|| "us-ascii".into()),
                    encoding: encoding_name(&other.transfer_encoding),
                });
            } else {
                layout.attachments.push(attachment(&section, common, other.octets));
            }
        }
        BodyStructure::Basic { common, other, .. } | BodyStructure::Message { common, other, .. } => {
            layout.attachments.push(attachment(&section, common, other.octets));
        }
    }
}

fn attachment(section: &[u32], common: &imap_proto::BodyContentCommon<'_>, octets: u32) -> AttachmentMeta {
    let filename = common
        .disposition
        .as_ref()
        .and_then(|d| param(&d.params, "filename"))
        .or_else(|| param(&common.ty.params, "name"))
        .unwrap_or_default();
    AttachmentMeta {
        part_id: section_name(section),
        filename,
        content_type: format!("{}/{}", common.ty.ty, common.ty.subtype).to_ascii_lowercase(),
        size: i64::from(octets),
    }
}

fn param(params: &imap_proto::BodyParams<'_>, name: &str) -> Option<String> {
    params.as_ref()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_string())
}

fn encoding_name(e: &imap_proto::ContentEncoding<'_>) -> String {
    use imap_proto::ContentEncoding as E;
    match e {
        E::SevenBit => "7bit".into(),
        E::EightBit => "8bit".into(),
        E::Binary => "binary".into(),
        E::Base64 => "base64".into(),
        E::QuotedPrintable => "quoted-printable".into(),
        E::Other(o) => o.to_string(),
    }
}

fn section_name(section: &[u32]) -> String {
    section.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// Compresses sorted or unsorted UIDs into an IMAP sequence set (`1:5,9,12:14`).
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out += &start.to_string();
        } else {
            out += &format!("{start}:{end}");
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn uid_sets() {
        assert_eq!(super::uid_set(&[5, 1, 2, 3, 9, 12, 13, 14, 3]), "1:3,5,9,12:14");
        assert_eq!(super::uid_set(&[7]), "7");
    }
}
