//! A CardDAV client (RFC 6352 on WebDAV, RFC 4918): discovery of the user's address
//! books (RFC 6764 current-user-principal -> addressbook-home-set), `sync-collection`
//! (RFC 6578) with sync tokens, `addressbook-multiget`, and writes guarded by ETags
//! (`If-Match`, `If-None-Match: *`). Nothing here touches the store.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::engine::{NewContact, Remote, RemoteCard, RemoteDelta, RemoteError};
use super::{ContactFields, vcard};

const DAV: &str = "DAV:";
const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
/// Cards fetched per addressbook-multiget.
const MULTIGET_BATCH: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum DavError {
    #[error("cannot reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{method} {url}: the server answered {status}")]
    Status { method: String, url: String, status: u16 },
    #[error("{method} {url}: credentials refused ({status})")]
    Auth { method: String, url: String, status: u16 },
    /// The sync token is no longer valid (403/409 valid-sync-token, or a server error on
    /// a token request): list everything instead.
    #[error("the server refused the sync token")]
    TokenRefused,
    /// `If-Match` / `If-None-Match` failed: the card changed (or exists) on the server.
    #[error("{url} changed on the server")]
    PreconditionFailed { url: String },
    #[error("{0}")]
    Protocol(String),
}

impl DavError {
    pub fn is_transient(&self) -> bool {
        match self {
            DavError::Network { .. } => true,
            DavError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A fetched card.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub href: String,
    pub etag: String,
    pub text: String,
}

pub struct CardDav {
    http: reqwest::Client,
    username: String,
    password: String,
    /// scheme://host:port, to turn server paths into URLs.
    origin: String,
    /// Path of the address book collection, ending in `/`.
    pub collection: String,
}

impl CardDav {
    /// Finds (or creates) the address book named `name` (display name or last path
    /// segment) of the user at `url` (the server's root, a principal or a home URL).
    pub async fn connect(
        url: &str,
        username: &str,
        password: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<CardDav, DavError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| DavError::Protocol(format!("HTTP client: {e}")))?;
        let parsed = reqwest::Url::parse(url).map_err(|e| DavError::Protocol(format!("{url} is not a URL: {e}")))?;
        let origin = parsed.origin().ascii_serialization();
        let mut dav =
            CardDav { http, username: username.into(), password: password.into(), origin, collection: String::new() };
        let start = parsed.path().to_string();
        let principal = dav.href_prop(&start, "current-user-principal", DAV).await?.unwrap_or(start.clone());
        let home = dav.href_prop(&principal, "addressbook-home-set", CARDDAV).await?.unwrap_or(principal);
        dav.collection = dav.find_or_create_address_book(&home, name).await?;
        Ok(dav)
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.origin)
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<reqwest::Response, DavError> {
        let url = self.url(path);
        let m = Method::from_bytes(method.as_bytes()).map_err(|e| DavError::Protocol(e.to_string()))?;
        let mut request = self.http.request(m, &url).basic_auth(&self.username, Some(&self.password));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            let content_type =
                if method == "PUT" { "text/vcard; charset=utf-8" } else { "application/xml; charset=utf-8" };
            request = request.header("Content-Type", content_type).body(body);
        }
        let response =
            request.send().await.map_err(|e| DavError::Network { url: url.clone(), reason: e.to_string() })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(DavError::Auth { method: method.into(), url, status: status.as_u16() });
        }
        Ok(response)
    }

    async fn multistatus(
        &self,
        method: &str,
        path: &str,
        depth: &str,
        body: String,
    ) -> Result<Vec<DavResponse>, DavError> {
        let response = self.request(method, path, &[("Depth", depth)], Some(body)).await?;
        let status = response.status();
        if status != StatusCode::MULTI_STATUS {
            return Err(DavError::Status { method: method.into(), url: self.url(path), status: status.as_u16() });
        }
        let text =
            response.text().await.map_err(|e| DavError::Network { url: self.url(path), reason: e.to_string() })?;
        parse_multistatus(&text)
    }

    /// The first href inside property `name` of `path`.
    async fn href_prop(&self, path: &str, name: &str, ns: &str) -> Result<Option<String>, DavError> {
        let prefix = if ns == DAV { "" } else { " xmlns:C=\"urn:ietf:params:xml:ns:carddav\"" };
        let element = if ns == DAV { name.to_string() } else { format!("C:{name}") };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><propfind xmlns=\"DAV:\"{prefix}><prop><{element}/></prop></propfind>"
        );
        let responses = self.multistatus("PROPFIND", path, "0", body).await?;
        Ok(responses.iter().flat_map(|r| &r.props).find(|p| p.name == name).and_then(|p| p.hrefs.first().cloned()))
    }

    async fn find_or_create_address_book(&self, home: &str, name: &str) -> Result<String, DavError> {
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><propfind xmlns=\"DAV:\"><prop><resourcetype/><displayname/></prop></propfind>";
        let responses = self.multistatus("PROPFIND", home, "1", body.into()).await?;
        for r in &responses {
            let is_book =
                r.props.iter().any(|p| p.name == "resourcetype" && p.children.iter().any(|c| c == "addressbook"));
            let display = r.props.iter().find(|p| p.name == "displayname").map(|p| p.text.as_str()).unwrap_or("");
            let segment = r.href.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if is_book && (display == name || segment == name) {
                return Ok(with_slash(&r.href));
            }
        }
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let path = format!("{}{slug}/", with_slash(home));
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><mkcol xmlns=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:carddav\">\
             <set><prop><resourcetype><collection/><C:addressbook/></resourcetype><displayname>{}</displayname></prop></set></mkcol>",
            xml_escape(name)
        );
        let response = self.request("MKCOL", &path, &[], Some(body)).await?;
        if !response.status().is_success() {
            return Err(DavError::Status {
                method: "MKCOL".into(),
                url: self.url(&path),
                status: response.status().as_u16(),
            });
        }
        Ok(path)
    }

    /// Changes since `token` (everything when empty), following truncated results.
    pub async fn changes(&self, token: &str) -> Result<RemoteDelta, DavError> {
        let mut delta = RemoteDelta { full: token.is_empty(), ..RemoteDelta::default() };
        let mut token = token.to_string();
        loop {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><sync-collection xmlns=\"DAV:\"><sync-token>{}</sync-token>\
                 <sync-level>1</sync-level><prop><getetag/></prop></sync-collection>",
                xml_escape(&token)
            );
            let response = self.request("REPORT", &self.collection, &[], Some(body)).await?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|e| DavError::Network { url: self.url(&self.collection), reason: e.to_string() })?;
            if status != StatusCode::MULTI_STATUS {
                // RFC 6578 3.2: an invalid token is 403 or 409 (valid-sync-token); some
                // servers answer 500 instead.
                let refused =
                    status == StatusCode::FORBIDDEN || status == StatusCode::CONFLICT || status.is_server_error();
                if !token.is_empty() && refused {
                    return Err(DavError::TokenRefused);
                }
                return Err(DavError::Status {
                    method: "REPORT".into(),
                    url: self.url(&self.collection),
                    status: status.as_u16(),
                });
            }
            let (responses, new_token) = parse_sync(&text)?;
            let mut truncated = false;
            for r in responses {
                if same_path(&r.href, &self.collection) {
                    truncated |= r.status == Some(507);
                    continue;
                }
                match r.status {
                    Some(404) => delta.removed.push(r.href),
                    _ => {
                        let etag =
                            r.props.iter().find(|p| p.name == "getetag").map(|p| p.text.clone()).unwrap_or_default();
                        delta.changed.push((r.href, etag));
                    }
                }
            }
            token = new_token;
            if !truncated {
                delta.token = token;
                return Ok(delta);
            }
        }
    }

    /// Fetches cards by href, in batches.
    pub async fn fetch(&self, hrefs: &[String]) -> Result<Vec<Fetched>, DavError> {
        let mut cards = Vec::with_capacity(hrefs.len());
        for batch in hrefs.chunks(MULTIGET_BATCH) {
            let list: String = batch.iter().map(|h| format!("<D:href>{}</D:href>", xml_escape(h))).collect();
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><C:addressbook-multiget xmlns:D=\"DAV:\" \
                 xmlns:C=\"urn:ietf:params:xml:ns:carddav\"><D:prop><D:getetag/><C:address-data/></D:prop>{list}</C:addressbook-multiget>"
            );
            for r in self.multistatus("REPORT", &self.collection, "1", body).await? {
                let prop = |name: &str| r.props.iter().find(|p| p.name == name).map(|p| p.text.clone());
                if let (Some(etag), Some(text)) = (prop("getetag"), prop("address-data")) {
                    cards.push(Fetched { href: r.href, etag, text });
                }
            }
        }
        Ok(cards)
    }

    /// Writes a card: an update guarded by `If-Match: etag`, or a create (etag `None`)
    /// guarded by `If-None-Match: *`. Returns the new ETag (asked for when the server
    /// does not return one).
    pub async fn put(&self, href: &str, text: String, etag: Option<&str>) -> Result<String, DavError> {
        let guard = match etag {
            Some(etag) => ("If-Match", etag),
            None => ("If-None-Match", "*"),
        };
        let response = self.request("PUT", href, &[guard], Some(text)).await?;
        let status = response.status();
        if status == StatusCode::PRECONDITION_FAILED {
            return Err(DavError::PreconditionFailed { url: self.url(href) });
        }
        if !status.is_success() {
            return Err(DavError::Status { method: "PUT".into(), url: self.url(href), status: status.as_u16() });
        }
        match response.headers().get("etag").and_then(|v| v.to_str().ok()) {
            Some(etag) => Ok(etag.to_string()),
            None => self.etag(href).await,
        }
    }

    pub async fn delete(&self, href: &str, etag: &str) -> Result<(), DavError> {
        let response = self.request("DELETE", href, &[("If-Match", etag)], None).await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            StatusCode::PRECONDITION_FAILED => Err(DavError::PreconditionFailed { url: self.url(href) }),
            s => Err(DavError::Status { method: "DELETE".into(), url: self.url(href), status: s.as_u16() }),
        }
    }

    async fn etag(&self, href: &str) -> Result<String, DavError> {
        let body =
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><propfind xmlns=\"DAV:\"><prop><getetag/></prop></propfind>";
        let responses = self.multistatus("PROPFIND", href, "0", body.into()).await?;
        Ok(responses
            .iter()
            .flat_map(|r| &r.props)
            .find(|p| p.name == "getetag")
            .map(|p| p.text.clone())
            .unwrap_or_default())
    }

    /// The href for a new card with `uid`, chosen before the PUT so a retry after a crash
    /// finds it.
    pub fn new_href(&self, uid: &str) -> String {
        format!("{}{uid}.vcf", self.collection)
    }
}

fn with_slash(path: &str) -> String {
    if path.ends_with('/') { path.to_string() } else { format!("{path}/") }
}

fn same_path(a: &str, b: &str) -> bool {
    let path = |s: &str| -> String {
        let s = s.split_once("://").map_or(s, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
        with_slash(s)
    };
    path(a) == path(b)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One `response` of a multistatus: its href, its own status (removed members), and
/// the properties found (status 200).
#[derive(Debug, Default)]
struct DavResponse {
    href: String,
    status: Option<u16>,
    props: Vec<DavProp>,
}

#[derive(Debug, Default)]
struct DavProp {
    name: String,
    text: String,
    /// Local names of child elements (resourcetype).
    children: Vec<String>,
    /// Nested hrefs (current-user-principal, addressbook-home-set).
    hrefs: Vec<String>,
}

fn parse_multistatus(xml: &str) -> Result<Vec<DavResponse>, DavError> {
    parse_sync(xml).map(|(responses, _)| responses)
}

/// The responses of a multistatus and its sync-token (empty when absent).
fn parse_sync(xml: &str) -> Result<(Vec<DavResponse>, String), DavError> {
    let doc =
        roxmltree::Document::parse(xml).map_err(|e| DavError::Protocol(format!("unreadable multistatus: {e}")))?;
    let is = |n: &roxmltree::Node, name: &str| {
        n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(DAV)
    };
    let root = doc.root_element();
    let token = root.children().find(|n| is(n, "sync-token")).and_then(|n| n.text()).unwrap_or("").trim().to_string();
    let mut responses = Vec::new();
    for response in root.children().filter(|n| is(n, "response")) {
        let mut r = DavResponse::default();
        for child in response.children().filter(|n| n.is_element()) {
            if is(&child, "href") {
                r.href = child.text().unwrap_or("").trim().to_string();
            } else if is(&child, "status") {
                r.status = status_code(child.text().unwrap_or(""));
            } else if is(&child, "propstat") {
                let ok = child.children().find(|n| is(n, "status")).and_then(|n| status_code(n.text().unwrap_or("")))
                    == Some(200);
                if !ok {
                    continue;
                }
                for prop in
                    child.children().filter(|n| is(n, "prop")).flat_map(|p| p.children().filter(|n| n.is_element()))
                {
                    r.props.push(DavProp {
                        name: prop.tag_name().name().to_string(),
                        text: prop.text().unwrap_or("").trim().to_string(),
                        children: prop
                            .children()
                            .filter(|n| n.is_element())
                            .map(|n| n.tag_name().name().to_string())
                            .collect(),
                        hrefs: prop
                            .descendants()
                            .filter(|n| is(n, "href"))
                            .filter_map(|n| n.text())
                            .map(|t| t.trim().to_string())
                            .collect(),
                    });
                }
            }
        }
        responses.push(r);
    }
    Ok((responses, token))
}

/// The code of an HTTP status line (`HTTP/1.1 404 Not Found`).
fn status_code(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

impl From<DavError> for RemoteError {
    fn from(e: DavError) -> RemoteError {
        match e {
            DavError::TokenRefused => RemoteError::TokenRefused,
            DavError::PreconditionFailed { url } => RemoteError::Conflict(url),
            other => RemoteError::Failed { transient: other.is_transient(), message: other.to_string() },
        }
    }
}

/// A CardDAV address book as the sync engine sees it; `Raw` is the card as read, so an
/// update keeps its unmapped properties.
pub struct CardDavBook {
    pub dav: CardDav,
    pub name: String,
    /// For phone numbers without a country code (the sync's `default_region`).
    pub region: String,
}

impl Remote for CardDavBook {
    type Raw = Option<calcard::vcard::VCard>;

    async fn changes(&mut self, token: &str) -> Result<RemoteDelta, RemoteError> {
        Ok(self.dav.changes(token).await?)
    }

    async fn fetch(&mut self, ids: &[String]) -> Result<Vec<RemoteCard<Self::Raw>>, RemoteError> {
        let fetched = self.dav.fetch(ids).await?;
        Ok(fetched
            .into_iter()
            .map(|f| match vcard::parse(&f.text) {
                Some(card) => {
                    RemoteCard { id: f.href, etag: f.etag, uid: card.uid, fields: card.fields, raw: Some(card.vcard) }
                }
                None => {
                    // Kept as an empty card: it is linked to nothing and overwritten by nothing.
                    tracing::warn!(href = %f.href, "CardDAV: unreadable vCard");
                    RemoteCard {
                        id: f.href,
                        etag: f.etag,
                        uid: String::new(),
                        fields: ContactFields::default(),
                        raw: None,
                    }
                }
            })
            .collect())
    }

    fn planned_id(&self, uid: &str) -> String {
        self.dav.new_href(uid)
    }

    async fn create_batch(&mut self, new: &[NewContact]) -> Vec<Result<(String, String), RemoteError>> {
        let mut results = Vec::with_capacity(new.len());
        for n in new {
            let written = self.dav.put(&n.planned_id, vcard::render(None, &n.uid, &n.fields, &self.region), None).await;
            results.push(written.map(|etag| (n.planned_id.clone(), etag)).map_err(RemoteError::from));
        }
        results
    }

    async fn update_batch(
        &mut self,
        updates: &[(RemoteCard<Self::Raw>, ContactFields)],
    ) -> Vec<Result<String, RemoteError>> {
        let mut results = Vec::with_capacity(updates.len());
        for (card, fields) in updates {
            let Some(raw) = &card.raw else {
                results.push(Err(RemoteError::Failed {
                    message: format!("{} is not a readable vCard; not overwriting it", card.id),
                    transient: false,
                }));
                continue;
            };
            let uid = if card.uid.is_empty() {
                card.id.rsplit('/').next().unwrap_or("").trim_end_matches(".vcf").to_string()
            } else {
                card.uid.clone()
            };
            results.push(
                self.dav
                    .put(&card.id, vcard::render(Some(raw), &uid, fields, &self.region), Some(&card.etag))
                    .await
                    .map_err(RemoteError::from),
            );
        }
        results
    }

    async fn delete(&mut self, id: &str, etag: &str) -> Result<(), RemoteError> {
        Ok(self.dav.delete(id, etag).await?)
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_sync_collection_answer() {
        let xml = r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:">
          <d:response><d:href>/u/book/a.vcf</d:href><d:propstat><d:prop><d:getetag>"1"</d:getetag></d:prop>
            <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
          <d:response><d:href>/u/book/b.vcf</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>
          <d:sync-token>http://x/sync/7</d:sync-token></d:multistatus>"#;
        let (responses, token) = parse_sync(xml).unwrap();
        assert_eq!(token, "http://x/sync/7");
        assert_eq!(responses[0].props[0].text, "\"1\"");
        assert_eq!(responses[1].status, Some(404));
        assert!(same_path("http://h:1/u/book", "/u/book/"));
    }
}
