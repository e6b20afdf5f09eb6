//! The HTTP API of a running daemon: authentication, error shape, CRUD, OpenAPI coverage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may; src/ may not

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn api_on_both_backends() {
    for db in TestDb::both() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(dir.path(), db.url());
        let label = db.label();

        // Authentication: none, wrong, right.
        let (status, body) = http(daemon.api_port, "GET", "/v1/accounts", None, None).unwrap();
        assert_eq!(status, 401, "{label}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "unauthorized");
        let (status, _) = http(daemon.api_port, "GET", "/v1/accounts", Some("wrong-token-wrong-token"), None).unwrap();
        assert_eq!(status, 401);
        assert_eq!(daemon.api("GET", "/v1/accounts", None), (200, json!([])));

        // Create and read back; the password never comes back.
        let (status, account) = daemon.api(
            "POST",
            "/v1/accounts",
            Some(&json!({"email": "Sam@Example.com", "imap_host": "imap.example.com", "password": "pw-sam-123", "imap_tls": "starttls"})),
        );
        assert_eq!(status, 201, "{label}: {account}");
        assert_eq!(account["imap_port"], 143);
        assert!(!account.to_string().contains("pw-sam-123"));
        let id = account["id"].as_i64().unwrap();
        assert_eq!(daemon.api("GET", &format!("/v1/accounts/{id}"), None).1["email"], "sam@example.com");
        let (status, err) = daemon.api(
            "POST",
            "/v1/accounts",
            Some(&json!({"email": "sam@example.com", "imap_host": "other", "password": "x"})),
        );
        assert_eq!(status, 409, "{err}");
        assert_eq!(err["error"]["code"], "conflict");

        let (status, contact) =
            daemon.api("POST", "/v1/contacts", Some(&json!({"name": "Ann", "emails": ["ann@client.example"]})));
        assert_eq!(status, 201, "{contact}");
        let (status, lead) = daemon.api(
            "POST",
            "/v1/leads",
            Some(&json!({"name": "Lee", "emails": ["lee@p.example"], "status": "qualified"})),
        );
        assert_eq!(status, 201, "{lead}");
        assert_eq!(lead["status"], "qualified");
        let (status, deal) = daemon.api(
            "POST",
            "/v1/deals",
            Some(&json!({"title": "Big one", "contacts": [contact["id"]], "leads": [lead["id"]]})),
        );
        assert_eq!(status, 201, "{deal}");
        assert_eq!(daemon.api("GET", "/v1/contacts?limit=10", None).1.as_array().unwrap().len(), 1);
        assert_eq!(daemon.api("GET", &format!("/v1/deals/{}", deal["id"]), None).1["leads"][0], lead["id"]);
        assert_eq!(daemon.api("GET", "/v1/status", None).1["accounts"][0]["id"], id);

        // Bad requests are 4xx with the error shape, never 500.
        for (method, path, body) in [
            ("POST", "/v1/contacts", Some("{not json")),
            ("POST", "/v1/contacts", Some(r#"{"emails": ["nope"]}"#)),
            ("POST", "/v1/contacts", Some(r#"{"name": "X", "unknown": 1}"#)),
            ("POST", "/v1/deals", Some(r#"{"title": "X", "contacts": [999999]}"#)),
            ("GET", "/v1/contacts/abc", None),
            ("GET", "/v1/contacts/999999", None),
            ("GET", "/v1/contacts?limit=0", None),
            ("GET", "/v1/nothing-here", None),
            ("PUT", "/v1/contacts", Some("{}")),
        ] {
            let (status, text) = http(daemon.api_port, method, path, Some(&daemon.token), body).unwrap();
            assert!((400..500).contains(&status), "{label} {method} {path}: {status} {text}");
            let err: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: {text}"));
            assert!(err["error"]["code"].is_string() && err["error"]["message"].is_string(), "{text}");
        }

        // A BCC-drop address per user: stable until rotated, 128+ bits of token.
        let (status, drop) = daemon.api("GET", "/v1/users/sam@example.com/bcc-address", None);
        assert_eq!(status, 200, "{drop}");
        let address = drop["address"].as_str().unwrap().to_string();
        let (token, domain) = address.split_once('@').unwrap();
        assert!(token.len() >= 26 && domain == "drop.localhost", "{address}");
        assert_eq!(daemon.api("GET", "/v1/users/Sam@Example.com/bcc-address", None).1["address"], address.as_str());
        let (status, rotated) = daemon.api("POST", "/v1/users/sam@example.com/bcc-address/rotate", None);
        assert_eq!(status, 200);
        assert_ne!(rotated["address"], address.as_str(), "rotation replaces the token");
        assert_eq!(daemon.api("GET", "/v1/users/nobody@example.com/bcc-address", None).0, 404);
        let cli = ok(mailsync(&daemon.dir, db.url()).args(["bcc-address", "--user", "sam@example.com"]));
        assert_eq!(cli.trim(), rotated["address"].as_str().unwrap());

        let (status, _) = daemon.api("DELETE", &format!("/v1/accounts/{id}"), None);
        assert_eq!(status, 204);
        assert_eq!(daemon.api("GET", &format!("/v1/accounts/{id}"), None).0, 404);
    }
}

#[test]
fn every_documented_operation_is_routed() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), db.url());
    let (status, doc) = http(daemon.api_port, "GET", "/v1/openapi.json", None, None).unwrap();
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    // The served document is the one generated from the code.
    assert_eq!(doc, serde_json::from_str::<Value>(mailsync::api::openapi_json()).unwrap());
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "1").replace("{name}", "default").replace("{email}", "x@y.example");
            let body = (method == "post" || method == "put").then_some("{}");
            let (status, text) =
                http(daemon.api_port, &method.to_uppercase(), &concrete, Some(&daemon.token), body).unwrap();
            assert!(status != 405 && !text.contains("no_route"), "{method} {path} is documented but not routed");
            assert!(status < 500, "{method} {path}: {status} {text}");
            operations += 1;
        }
    }
    assert!(operations >= 15, "{operations}");
}
