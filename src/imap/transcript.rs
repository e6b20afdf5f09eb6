//! Replaying IMAP server transcripts in memory, for unit tests of the sync logic.
//!
//! A script is a list of steps: the command the client must send next (its start, after
//! the tag) and the server's whole answer, with `{tag}` standing for the command's tag.
//! The replaying server runs on one end of an in-memory pipe; the code under test gets a
//! logged-in [`Connection`] on the other, exactly as over TLS. The server fails the test
//! on a command the script does not expect, and reports the commands it saw.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::task::JoinHandle;

use super::connection::{Connection, ServerCaps};
use crate::net::timeout::TimeoutStream;

pub type TestStream = TimeoutStream<DuplexStream>;

/// One exchange: the command's start (after the tag) and the server's answer.
pub struct Step {
    pub command: String,
    pub answer: String,
}

pub fn step(command: impl Into<String>, answer: impl Into<String>) -> Step {
    Step { command: command.into(), answer: answer.into() }
}

/// An IMAP literal: `{N}\r\n` and the bytes.
pub fn literal(bytes: &str) -> String {
    format!("{{{}}}\r\n{bytes}", bytes.len())
}

/// A logged-in connection whose server plays `steps`; the handle yields the commands
/// the client sent, once the client has dropped its end.
pub async fn connection(steps: Vec<Step>, caps: ServerCaps) -> (Connection<TestStream>, JoinHandle<Vec<String>>) {
    let (client_end, server_end) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve(server_end, steps));
    let (stream, timeouts) = TimeoutStream::new(client_end, Duration::from_secs(10), Duration::from_secs(10));
    let mut client = async_imap::Client::new(stream);
    let greeting = client.read_response().await;
    assert!(matches!(greeting, Ok(Some(_))), "no greeting: {greeting:?}");
    let session = match client.login("user", "password").await {
        Ok(session) => session,
        Err((e, _)) => panic!("login failed: {e}"),
    };
    (Connection { session, timeouts, caps }, server)
}

async fn serve(stream: DuplexStream, steps: Vec<Step>) -> Vec<String> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    let mut seen = Vec::new();
    write.write_all(b"* OK [CAPABILITY IMAP4rev1] transcript server ready\r\n").await.unwrap();
    let login = step("LOGIN", "{tag} OK LOGIN completed\r\n");
    for step in std::iter::once(login).chain(steps) {
        let Ok(Some(line)) = lines.next_line().await else {
            panic!("the client hung up; the script still expects `{}`", step.command);
        };
        let (tag, command) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        assert!(
            command.to_ascii_uppercase().starts_with(&step.command.to_ascii_uppercase()),
            "expected `{}`, the client sent `{command}`",
            step.command
        );
        seen.push(command.to_string());
        let answer = step.answer.replace("{tag}", tag);
        write.write_all(answer.as_bytes()).await.unwrap();
        write.flush().await.unwrap();
    }
    // Anything more is a command the script did not expect.
    if let Ok(Some(line)) = lines.next_line().await {
        panic!("unexpected command after the script: `{line}`");
    }
    seen
}
