//! One SMTP or LMTP session (RFC 5321, RFC 2033), generic over the stream so tests can
//! drive it over an in-memory pipe. Commands are parsed by `smtp-proto`'s sans-IO
//! receivers; this module owns the state machine, the limits and the replies. What a
//! recipient is and what becomes of a message is the [`Mailroom`]'s business.
//!
//! Replies are written as commands are read and flushed when the input runs dry, which
//! is what PIPELINING (RFC 2920) asks of a server.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver, MAX_LINE_LENGTH, RequestReceiver};
use smtp_proto::{Error as ParseError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::DropProtocol;

/// A reply line: code, enhanced status code (RFC 3463) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        // A reply is one line: a reason with a line break in it would end it early.
        let text = text.into().replace(['\r', '\n'], " ");
        Reply { code, status, text }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    fn write(&self, out: &mut Vec<u8>) {
        let line = if self.status.is_empty() {
            format!("{} {}\r\n", self.code, self.text)
        } else {
            format!("{} {} {}\r\n", self.code, self.status, self.text)
        };
        out.extend_from_slice(line.as_bytes());
    }
}

/// A recipient the mailroom accepted, with the key of the mailbox it stands for (two
/// spellings of one drop address are one mailbox).
#[derive(Debug, Clone)]
pub struct Recipient {
    pub address: String,
    pub mailbox: i64,
}

/// The envelope of a transaction, as the mailroom sees it at the end of DATA.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub peer: SocketAddr,
    pub helo: String,
    pub tls: bool,
    /// The MAIL FROM address; empty for the null sender.
    pub mail_from: String,
    pub recipients: Vec<Recipient>,
}

impl Envelope {
    /// Distinct mailboxes, in the order of their first RCPT.
    pub fn mailboxes(&self) -> Vec<i64> {
        let mut seen = Vec::new();
        for r in &self.recipients {
            if !seen.contains(&r.mailbox) {
                seen.push(r.mailbox);
            }
        }
        seen
    }
}

/// Where recipients are checked and messages go.
pub trait Mailroom: Send + Sync {
    /// The mailbox `address` stands for, or the refusal to send back.
    fn recipient(&self, address: &str) -> impl Future<Output = Result<i64, Reply>> + Send;
    /// Processes a received message once per mailbox of `envelope.mailboxes()`, in that
    /// order, and returns one reply each. A positive reply promises the message is
    /// durably stored (or was already).
    fn deliver(&self, envelope: &Envelope, data: Vec<u8>) -> impl Future<Output = Vec<Reply>> + Send;
}

/// The session's limits and identity.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub protocol: DropProtocol,
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    pub idle_timeout: Duration,
    /// STARTTLS is offered (an acceptor is configured).
    pub starttls: bool,
}

/// Bad commands tolerated before the session is closed.
const MAX_ERRORS: u32 = 10;

/// How a session ended, for the caller (which upgrades the stream on `StartTls`).
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Quit,
    /// The client closed the connection (or it broke).
    Closed,
    IdleTimeout,
    TooManyErrors,
    /// The client asked for TLS and got 220: hand the stream to the TLS acceptor and run
    /// a new session over it (RFC 3207: the client must greet again).
    StartTls,
}

#[derive(Default)]
struct Transaction {
    mail_from: Option<String>,
    recipients: Vec<Recipient>,
}

/// A session over `stream`. The caller sends the greeting ([`Session::greet`]) on a new
/// connection, not after STARTTLS.
pub struct Session<'a, S, M> {
    stream: S,
    config: &'a SessionConfig,
    mailroom: &'a M,
    peer: SocketAddr,
    tls: bool,
    input: Vec<u8>,
    consumed: usize,
    output: Vec<u8>,
    helo: Option<String>,
    transaction: Transaction,
    errors: u32,
}

enum Input {
    Data,
    Closed,
    IdleTimeout,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin + Send, M: Mailroom> Session<'a, S, M> {
    pub fn new(stream: S, config: &'a SessionConfig, mailroom: &'a M, peer: SocketAddr, tls: bool) -> Self {
        Session {
            stream,
            config,
            mailroom,
            peer,
            tls,
            input: Vec::with_capacity(8192),
            consumed: 0,
            output: Vec::new(),
            helo: None,
            transaction: Transaction::default(),
            errors: 0,
        }
    }

    pub fn into_stream(self) -> S {
        self.stream
    }

    pub async fn greet(&mut self) -> std::io::Result<()> {
        let protocol = match self.config.protocol {
            DropProtocol::Smtp => "ESMTP",
            DropProtocol::Lmtp => "LMTP",
        };
        self.reply(Reply::new(220, "2.0.0", format!("{} {protocol} mailsync BCC drop", self.config.hostname)));
        self.flush().await
    }

    /// Sends a last reply (time limit, shutdown) and flushes it, briefly.
    pub async fn say_goodbye(&mut self, reply: Reply) {
        self.reply(reply);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
    }

    /// Serves commands until the session ends.
    pub async fn run(&mut self) -> std::io::Result<Ending> {
        let mut receiver = RequestReceiver::default();
        // A line longer than the limit is read to its end and dropped.
        let mut overlong = false;
        loop {
            // Commands are parsed one whole line at a time, so the limit holds however
            // the client's bytes arrive.
            let pending = &self.input[self.consumed..];
            let Some(newline) = pending.iter().position(|&b| b == b'\n') else {
                if pending.len() > MAX_LINE_LENGTH {
                    overlong = true;
                    self.consumed = self.input.len();
                }
                match self.fill().await? {
                    Input::Data => continue,
                    Input::Closed => return Ok(Ending::Closed),
                    Input::IdleTimeout => return self.idle_timeout().await,
                }
            };
            let line = &pending[..=newline];
            self.consumed += line.len();
            let parsed = if overlong || line.len() > MAX_LINE_LENGTH {
                overlong = false;
                Err(ParseError::ResponseTooLong)
            } else {
                receiver.ingest(&mut line.iter()).map(Request::into_owned)
            };
            let request = match parsed {
                Ok(request) => request,
                Err(e) => {
                    // A whole line that still "needs more data" is garbage; start afresh.
                    receiver = RequestReceiver::default();
                    self.reply(parse_error_reply(&e));
                    if self.count_error() {
                        return self.too_many_errors().await;
                    }
                    continue;
                }
            };
            if let Some(ending) = self.command(request).await? {
                return Ok(ending);
            }
        }
    }

    /// Handles one command; `Some` ends the session.
    async fn command(&mut self, request: Request<String>) -> std::io::Result<Option<Ending>> {
        let lmtp = self.config.protocol == DropProtocol::Lmtp;
        match request {
            Request::Ehlo { .. } | Request::Helo { .. } if lmtp => {
                self.reply(Reply::new(500, "5.5.1", "this is an LMTP server: use LHLO"));
            }
            Request::Lhlo { .. } if !lmtp => {
                self.reply(Reply::new(500, "5.5.1", "this is an SMTP server: use EHLO or HELO"));
            }
            Request::Helo { host } => {
                self.helo = Some(host);
                self.transaction = Transaction::default();
                self.reply(Reply::new(250, "2.0.0", self.config.hostname.clone()));
            }
            Request::Ehlo { host } | Request::Lhlo { host } => {
                self.helo = Some(host);
                self.transaction = Transaction::default();
                self.ehlo_reply();
            }
            Request::StartTls if !self.config.starttls => {
                self.reply(Reply::new(502, "5.5.1", "STARTTLS is not offered here"));
            }
            Request::StartTls if self.tls => {
                self.reply(Reply::new(503, "5.5.1", "TLS is already active"));
            }
            Request::StartTls => {
                self.reply(Reply::new(220, "2.0.0", "ready to start TLS"));
                self.flush().await?;
                // RFC 3207 section 5: anything pipelined after STARTTLS was sent in the
                // clear and must not be taken as coming from the TLS session.
                self.input.clear();
                self.consumed = 0;
                return Ok(Some(Ending::StartTls));
            }
            Request::Mail { .. } if self.helo.is_none() => {
                self.reply(Reply::new(503, "5.5.1", "say EHLO first"));
            }
            Request::Mail { .. } if self.transaction.mail_from.is_some() => {
                self.reply(Reply::new(503, "5.5.1", "nested MAIL command"));
            }
            Request::Mail { from } => {
                if from.size > self.config.max_message_bytes {
                    self.reply(Reply::new(
                        552,
                        "5.3.4",
                        format!("message size exceeds the limit of {} bytes", self.config.max_message_bytes),
                    ));
                } else {
                    self.transaction.mail_from = Some(from.address);
                    self.reply(Reply::new(250, "2.1.0", "sender ok"));
                }
            }
            Request::Rcpt { .. } if self.transaction.mail_from.is_none() => {
                self.reply(Reply::new(503, "5.5.1", "need MAIL before RCPT"));
            }
            Request::Rcpt { .. } if self.transaction.recipients.len() >= self.config.max_recipients => {
                self.reply(Reply::new(
                    452,
                    "4.5.3",
                    format!(
                        "too many recipients (at most {} per message); send the rest separately",
                        self.config.max_recipients
                    ),
                ));
            }
            Request::Rcpt { to } => {
                let reply = self.recipient(to.address).await;
                self.reply(reply);
            }
            Request::Data if self.transaction.mail_from.is_none() => {
                self.reply(Reply::new(503, "5.5.1", "need MAIL before DATA"));
            }
            Request::Data if self.transaction.recipients.is_empty() => {
                self.reply(Reply::new(554, "5.5.1", "no valid recipients"));
            }
            Request::Data => {
                self.reply(Reply::new(354, "", "end data with <CR><LF>.<CR><LF>"));
                self.flush().await?;
                if let Some(ending) = self.data().await? {
                    return Ok(Some(ending));
                }
            }
            Request::Bdat { .. } => {
                self.reply(Reply::new(502, "5.5.1", "CHUNKING is not offered; use DATA"));
            }
            Request::Rset => {
                self.transaction = Transaction::default();
                self.reply(Reply::new(250, "2.0.0", "reset"));
            }
            Request::Noop { .. } => self.reply(Reply::new(250, "2.0.0", "ok")),
            Request::Vrfy { .. } => self.reply(Reply::new(252, "2.5.2", "cannot verify; send the message")),
            Request::Quit => {
                self.reply(Reply::new(221, "2.0.0", "bye"));
                self.flush().await?;
                return Ok(Some(Ending::Quit));
            }
            other => {
                self.reply(Reply::new(502, "5.5.1", format!("{} is not implemented", other.name())));
            }
        }
        Ok(None)
    }

    async fn recipient(&mut self, address: String) -> Reply {
        let mailbox = match self.mailroom.recipient(&address).await {
            Ok(mailbox) => mailbox,
            Err(refusal) => return refusal,
        };
        let other_mailboxes = self.transaction.recipients.iter().filter(|r| r.mailbox != mailbox).count();
        // SMTP has one reply for the whole message, so a transaction holds one mailbox:
        // a second one would share the first one's fate. RFC 5321 section 3.3: the
        // client delivers a 452 recipient in a later transaction.
        if self.config.protocol == DropProtocol::Smtp && other_mailboxes > 0 {
            return Reply::new(452, "4.5.3", "one drop address per message over SMTP; send this one separately");
        }
        self.transaction.recipients.push(Recipient { address, mailbox });
        Reply::new(250, "2.1.5", "recipient ok")
    }

    /// Reads the message up to the terminating dot, then hands it to the mailroom.
    async fn data(&mut self) -> std::io::Result<Option<Ending>> {
        let mut receiver = DataReceiver::new();
        let mut message = Vec::new();
        let limit = self.config.max_message_bytes;
        // `Some(ended)`: over the limit, with or without its end read.
        let mut too_large = None;
        let ended = self
            .feed(|pending| {
                let mut bytes = pending.iter();
                let done = receiver.ingest(&mut bytes, &mut message);
                if message.len() > limit {
                    too_large = Some(done);
                }
                (pending.len() - bytes.len(), done || too_large.is_some())
            })
            .await?;
        if ended.is_some() {
            return Ok(ended);
        }
        let transaction = std::mem::take(&mut self.transaction);
        if let Some(done) = too_large {
            // Read and drop the rest so the client gets its reply after its dot.
            drop(message);
            let mut rest = DummyDataReceiver::new_data(&receiver);
            if !done {
                let ended = self
                    .feed(|pending| {
                        let mut bytes = pending.iter();
                        let done = rest.ingest(&mut bytes);
                        (pending.len() - bytes.len(), done)
                    })
                    .await?;
                if ended.is_some() {
                    return Ok(ended);
                }
            }
            let reply = Reply::new(552, "5.3.4", format!("message exceeds the limit of {limit} bytes"));
            self.replies_for(&transaction.recipients, |_| reply.clone());
            return Ok(None);
        }
        let envelope = Envelope {
            peer: self.peer,
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls,
            mail_from: transaction.mail_from.unwrap_or_default(),
            recipients: transaction.recipients,
        };
        let mailboxes = envelope.mailboxes();
        let replies = self.mailroom.deliver(&envelope, message).await;
        let reply_of = |mailbox: i64| {
            mailboxes
                .iter()
                .position(|m| *m == mailbox)
                .and_then(|i| replies.get(i).cloned())
                .unwrap_or_else(|| Reply::new(451, "4.3.0", "internal error: no outcome for this recipient"))
        };
        self.replies_for(&envelope.recipients, |r| reply_of(r.mailbox));
        Ok(None)
    }

    /// Hands input to `ingest` (which says how many bytes it took and whether it is done)
    /// until it is done; `Some` when the session ended first.
    async fn feed(&mut self, mut ingest: impl FnMut(&[u8]) -> (usize, bool)) -> std::io::Result<Option<Ending>> {
        loop {
            let (used, done) = ingest(&self.input[self.consumed..]);
            self.consumed += used;
            if done {
                return Ok(None);
            }
            match self.fill().await? {
                Input::Data => {}
                Input::Closed => return Ok(Some(Ending::Closed)),
                Input::IdleTimeout => return self.idle_timeout().await.map(Some),
            }
        }
    }

    /// One reply per accepted recipient in LMTP (RFC 2033 section 4.2), one in all in SMTP.
    fn replies_for(&mut self, recipients: &[Recipient], reply: impl Fn(&Recipient) -> Reply) {
        match (self.config.protocol, recipients.first()) {
            (DropProtocol::Lmtp, _) => recipients.iter().for_each(|r| self.reply(reply(r))),
            (DropProtocol::Smtp, Some(first)) => self.reply(reply(first)),
            (DropProtocol::Smtp, None) => {}
        }
    }

    fn ehlo_reply(&mut self) {
        let mut lines = vec![
            self.config.hostname.clone(),
            "PIPELINING".into(),
            "8BITMIME".into(),
            format!("SIZE {}", self.config.max_message_bytes),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.config.starttls && !self.tls {
            lines.push("STARTTLS".into());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.output.extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
    }

    fn reply(&mut self, reply: Reply) {
        reply.write(&mut self.output);
    }

    fn count_error(&mut self) -> bool {
        self.errors += 1;
        self.errors >= MAX_ERRORS
    }

    async fn too_many_errors(&mut self) -> std::io::Result<Ending> {
        self.reply(Reply::new(421, "4.7.0", "too many errors, closing"));
        self.flush().await?;
        Ok(Ending::TooManyErrors)
    }

    async fn idle_timeout(&mut self) -> std::io::Result<Ending> {
        self.say_goodbye(Reply::new(421, "4.4.2", "idle timeout, closing")).await;
        Ok(Ending::IdleTimeout)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Flushes pending replies, then waits for more input.
    async fn fill(&mut self) -> std::io::Result<Input> {
        self.flush().await?;
        if self.consumed == self.input.len() {
            self.input.clear();
            self.consumed = 0;
        } else if self.consumed > 0 {
            self.input.drain(..self.consumed);
            self.consumed = 0;
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(self.config.idle_timeout, self.stream.read(&mut chunk)).await {
            Err(_) => Ok(Input::IdleTimeout),
            Ok(Ok(0)) => Ok(Input::Closed),
            Ok(Ok(n)) => {
                self.input.extend_from_slice(&chunk[..n]);
                Ok(Input::Data)
            }
            Ok(Err(e)) if is_disconnect(&e) => Ok(Input::Closed),
            Ok(Err(e)) => Err(e),
        }
    }
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}

fn parse_error_reply(e: &ParseError) -> Reply {
    match e {
        ParseError::UnknownCommand => Reply::new(500, "5.5.2", "command not recognized"),
        ParseError::InvalidSenderAddress => Reply::new(501, "5.1.7", "invalid sender address"),
        ParseError::InvalidRecipientAddress => Reply::new(501, "5.1.3", "invalid recipient address"),
        ParseError::SyntaxError { syntax } => Reply::new(501, "5.5.4", format!("syntax: {syntax}")),
        ParseError::InvalidParameter { param } => Reply::new(501, "5.5.4", format!("invalid parameter {param}")),
        ParseError::UnsupportedParameter { param } => {
            Reply::new(555, "5.5.4", format!("unsupported parameter {param}"))
        }
        ParseError::ResponseTooLong => Reply::new(500, "5.5.6", "line too long"),
        ParseError::NeedsMoreData { .. } => Reply::new(500, "5.5.2", "incomplete command"),
        ParseError::InvalidResponse { .. } => Reply::new(500, "5.5.2", "command not recognized"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// Accepts `<n>@drop.test` as mailbox n; records what it is handed.
    #[derive(Default)]
    struct Recorder {
        delivered: Mutex<Vec<(Vec<i64>, Vec<u8>)>>,
    }

    impl Mailroom for Recorder {
        async fn recipient(&self, address: &str) -> Result<i64, Reply> {
            address
                .strip_suffix("@drop.test")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Reply::new(550, "5.1.1", "no such drop address"))
        }
        async fn deliver(&self, envelope: &Envelope, data: Vec<u8>) -> Vec<Reply> {
            let mailboxes = envelope.mailboxes();
            self.delivered.lock().unwrap().push((mailboxes.clone(), data));
            mailboxes.iter().map(|m| Reply::new(250, "2.0.0", format!("stored for {m}"))).collect()
        }
    }

    fn config(protocol: DropProtocol) -> SessionConfig {
        SessionConfig {
            protocol,
            hostname: "drop.test".into(),
            max_message_bytes: 1000,
            max_recipients: 3,
            idle_timeout: Duration::from_secs(5),
            starttls: false,
        }
    }

    /// Runs a session fed `input` at once (a pipelining client); returns the reply codes.
    async fn converse(protocol: DropProtocol, input: &str) -> (Vec<String>, Recorder) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let recorder = Recorder::default();
        let config = config(protocol);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (mut read, mut write) = tokio::io::split(client);
        write.write_all(input.as_bytes()).await.unwrap();
        let session = async {
            let mut session = Session::new(server, &config, &recorder, peer, false);
            session.greet().await.unwrap();
            session.run().await.unwrap()
        };
        let reader = async {
            let mut lines = BufReader::new(&mut read).lines();
            let mut replies = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let done = line.starts_with("221");
                replies.push(line);
                if done {
                    break;
                }
            }
            replies
        };
        let (ending, replies) = tokio::join!(session, reader);
        assert_eq!(ending, Ending::Quit);
        (replies, recorder)
    }

    fn codes(replies: &[String]) -> Vec<&str> {
        replies.iter().filter(|l| l.as_bytes().get(3) == Some(&b' ')).map(|l| &l[..3]).collect()
    }

    #[tokio::test]
    async fn pipelined_transaction_gets_every_reply_in_order() {
        let (replies, recorder) = converse(
            DropProtocol::Smtp,
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<1@drop.test>\r\nRCPT TO:<nobody@drop.test>\r\nDATA\r\n\
             Subject: hi\r\n\r\n..dot-stuffed\r\n.\r\nQUIT\r\n",
        )
        .await;
        assert_eq!(codes(&replies), ["220", "250", "250", "250", "550", "354", "250", "221"], "{replies:?}");
        assert!(replies.iter().any(|l| l == "250-PIPELINING") && replies.iter().any(|l| l == "250-SIZE 1000"));
        let delivered = recorder.delivered.lock().unwrap();
        assert_eq!(delivered[0].0, [1]);
        assert_eq!(delivered[0].1, b"Subject: hi\r\n\r\n.dot-stuffed\r\n");
    }

    #[tokio::test]
    async fn malformed_and_out_of_order_commands_are_refused_and_the_session_goes_on() {
        let (replies, recorder) = converse(
            DropProtocol::Smtp,
            "MAIL FROM:<a@x.test>\r\nEHLO c\r\nFROB\r\nRCPT TO:<1@drop.test>\r\nMAIL FROM:<bad address\r\n\
             DATA\r\nMAIL FROM:<a@x.test> SIZE=5000\r\nLHLO c\r\nBDAT 10 LAST\r\nQUIT\r\n",
        )
        .await;
        assert_eq!(
            codes(&replies),
            ["220", "503", "250", "500", "503", "501", "503", "552", "500", "502", "221"],
            "{replies:?}"
        );
        assert!(recorder.delivered.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn oversized_data_is_refused_after_its_dot_and_the_next_message_passes() {
        let big = "x".repeat(2000);
        let input = format!(
            "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<1@drop.test>\r\nDATA\r\n{big}\r\n.\r\n\
             MAIL FROM:<a@x.test>\r\nRCPT TO:<1@drop.test>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n"
        );
        let (replies, recorder) = converse(DropProtocol::Smtp, &input).await;
        assert_eq!(
            codes(&replies),
            ["220", "250", "250", "250", "354", "552", "250", "250", "354", "250", "221"],
            "{replies:?}"
        );
        assert_eq!(recorder.delivered.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn overlong_lines_are_refused_whole() {
        let long = "x".repeat(MAX_LINE_LENGTH + 10);
        let (replies, _) = converse(DropProtocol::Smtp, &format!("NOOP {long}\r\nEHLO c\r\nQUIT\r\n")).await;
        assert_eq!(codes(&replies), ["220", "500", "250", "221"], "{replies:?}");
    }

    #[tokio::test]
    async fn recipient_limits_smtp_one_mailbox_lmtp_one_reply_each() {
        let input = "EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<1@drop.test>\r\nRCPT TO:<1@drop.test>\r\n\
             RCPT TO:<2@drop.test>\r\nQUIT\r\n";
        let (replies, _) = converse(DropProtocol::Smtp, input).await;
        assert_eq!(codes(&replies), ["220", "250", "250", "250", "250", "452", "221"], "{replies:?}");

        let input = "LHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<1@drop.test>\r\nRCPT TO:<2@drop.test>\r\n\
             RCPT TO:<3@drop.test>\r\nRCPT TO:<4@drop.test>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n";
        let (replies, recorder) = converse(DropProtocol::Lmtp, input).await;
        assert_eq!(
            codes(&replies),
            ["220", "250", "250", "250", "250", "250", "452", "354", "250", "250", "250", "221"],
            "{replies:?}"
        );
        assert_eq!(recorder.delivered.lock().unwrap()[0].0, [1, 2, 3]);
        assert!(replies.iter().any(|l| l.contains("stored for 3")));
    }
}
