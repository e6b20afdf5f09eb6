//! The test rig: real servers started per test on free loopback ports, in temporary
//! directories, stopped when the handle drops.
//!
//! - [`Dovecot`]: IMAP (plain + STARTTLS), IMAPS and LMTP, certificates from a test CA.
//! - [`Postfix`]: a private Postfix instance relaying chosen domains to an LMTP port.
//! - [`SmtpSink`]: Postfix's `smtp-sink`.
//! - [`Radicale`], [`Xandikos`]: CardDAV servers; [`google::PeopleServer`]: a fake of
//!   the Google People API; [`Dns`]: dnsmasq with DKIM/SPF records.
//! - [`TestDb`]: a fresh SQLite file or a fresh PostgreSQL database on the machine's server.
//! - [`Daemon`]: the `mailsync` binary with its own config, data directory and API port.
//!
//! Needs the packages installed by `scripts/install-test-deps` and runs as root (the
//! servers drop privileges themselves). Everything waits by polling with a deadline.
#![allow(dead_code)]

pub mod google;
pub mod oauth;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Generous upper bound for a server to come up on a loaded 2-core machine.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A port that was free a moment ago on 127.0.0.1, never the same twice in one test
/// process: a server stopped and restarted on its port must not find it taken by
/// another test's server that was handed the same number in between.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `deadline` passes.
pub fn poll<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async twin of [`poll`], for tests inside a tokio runtime.
pub async fn poll_async<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a sync step may take in a test before it counts as hung.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(60);

/// Waits until every folder of the account has finished its initial sync.
pub async fn wait_initial_sync(store: &mailsync::store::Store, account: i64, folders: usize) {
    poll_async(SYNC_DEADLINE, "initial sync of all folders", || async {
        let done = store.folders(account).await.ok()?.iter().filter(|f| f.initial_sync_done).count();
        (done == folders).then_some(())
    })
    .await
}

/// Waits until the store holds a message with this Message-ID.
pub async fn wait_for_message(store: &mailsync::store::Store, message_id: &str, deadline: Duration) {
    poll_async(deadline, &format!("message <{message_id}> stored"), || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE message_id = $1")
            .bind(message_id)
            .fetch_one(store.pool())
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await
}

/// Waits until the stored message `id` is seen in its account's Sent folder, i.e. the
/// Sent folder's sync recognized its copy there as the same message.
pub async fn wait_in_sent_folder(store: &mailsync::store::Store, id: i64) {
    poll_async(SYNC_DEADLINE, "the Sent copy synced as the same message", || async {
        let n: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM message_locations l JOIN folders f ON f.id = l.folder_id ",
            "WHERE l.message_id = $1 AND f.role = 'sent'"
        ))
        .bind(id)
        .fetch_one(store.pool())
        .await
        .ok()?;
        (n == 1).then_some(())
    })
    .await;
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    poll(START_DEADLINE, what, || {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited with {status} before listening:\n{log}");
        }
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

/// A temporary directory the servers' unprivileged users can traverse. With
/// `TEST_KEEP_DIRS` set it survives the test, for reading server logs afterwards.
pub fn shared_tempdir() -> TempDir {
    let mut dir = tempfile::Builder::new().prefix("mailsync-test-").tempdir().expect("tempdir");
    if std::env::var_os("TEST_KEEP_DIRS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    set_mode(dir.path(), 0o755);
    dir
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for `localhost` and 127.0.0.1, made once per process.
pub struct Certs {
    _dir: TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = shared_tempdir();
        let p = |name: &str| dir.path().join(name);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "3650", "-subj", "/CN=mailsync test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")));
        run(Command::new("openssl")
            .arg("req")
            .args(ec)
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext.cnf");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "3650", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .arg("-out")
            .arg(p("server.crt")));
        for f in ["server.key", "ca.key"] {
            set_mode(&p(f), 0o644);
        }
        Certs { ca: p("ca.crt"), cert: p("server.crt"), key: p("server.key"), _dir: dir }
    })
}

pub fn kill(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------
// Dovecot

/// A Dovecot with IMAP (STARTTLS available), IMAPS and LMTP on loopback, maildirs in a
/// temporary directory, passwords in a passwd-file, and a raw log of every IMAP session.
pub struct Dovecot {
    pub dir: TempDir,
    child: Option<Child>,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub lmtp_port: u16,
    /// Extra config appended to dovecot.conf (e.g. to disable IDLE).
    extra: String,
}

impl Dovecot {
    /// Starts Dovecot with the given `(address, password)` users.
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Self::start_with(users, "")
    }

    pub fn start_with(users: &[(&str, &str)], extra: &str) -> Dovecot {
        let dir = shared_tempdir();
        for sub in ["run", "state", "mail", "rawlog"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        set_mode(&dir.path().join("mail"), 0o777);
        set_mode(&dir.path().join("rawlog"), 0o777);
        let mut dovecot = Dovecot {
            dir,
            child: None,
            imap_port: free_port(),
            imaps_port: free_port(),
            lmtp_port: free_port(),
            extra: extra.to_string(),
        };
        for (user, password) in users {
            dovecot.add_user(user, password);
        }
        dovecot.write_config();
        dovecot.launch();
        dovecot
    }

    pub fn add_user(&self, user: &str, password: &str) {
        let path = self.dir.path().join("users");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("users");
        writeln!(f, "{user}:{{PLAIN}}{password}").expect("write users");
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let certs = certs();
        let config = format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \Sent
    auto = subscribe
  }}
}}
protocol imap {{
  mail_max_userip_connections = 10000
  rawlog_dir = {d}/rawlog
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service anvil {{
  chroot =
}}
# user+Folder@domain delivers into Folder (created if missing).
recipient_delimiter = +
lmtp_save_to_detail_mailbox = yes
lda_mailbox_autocreate = yes
{extra}
"#,
            cert = certs.cert.display(),
            key = certs.key.display(),
            imap = self.imap_port,
            imaps = self.imaps_port,
            lmtp = self.lmtp_port,
            extra = self.extra,
        );
        std::fs::write(self.dir.path().join("dovecot.conf"), config).expect("dovecot.conf");
    }

    fn launch(&mut self) {
        use std::os::unix::process::CommandExt;
        // Its own process group, so that stop() ends the client processes too: Dovecot's
        // master leaves running imap processes alive when it exits.
        let mut child = Command::new("dovecot")
            .process_group(0)
            .arg("-F")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start dovecot (is dovecot-imapd installed?)");
        let log = self.dir.path().join("dovecot.log");
        wait_for_port(self.imap_port, &mut child, "dovecot imap", &log);
        wait_for_port(self.lmtp_port, &mut child, "dovecot lmtp", &log);
        self.child = Some(child);
    }

    /// Stops Dovecot and every process it started: connected clients see the server go.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            kill(&mut child);
            let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        }
    }

    /// Stops and starts Dovecot on the same ports and mail directories.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts a stopped Dovecot again (after [`Dovecot::stop`]).
    pub fn relaunch(&mut self) {
        self.launch();
    }

    /// A Dovecot that offers no TLS at all: plain IMAP only, no STARTTLS, no IMAPS.
    pub fn start_plaintext_only(users: &[(&str, &str)]) -> Dovecot {
        let mut dovecot = Self::start_with(users, "");
        dovecot.stop();
        let conf = dovecot.dir.path().join("dovecot.conf");
        let text = std::fs::read_to_string(&conf).expect("dovecot.conf");
        let imaps = format!("  inet_listener imaps {{\n    port = {}\n    ssl = yes\n  }}\n", dovecot.imaps_port);
        let text = text
            .replace(&imaps, "")
            .lines()
            .filter(|l| !l.starts_with("ssl_cert") && !l.starts_with("ssl_key"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("ssl = yes", "ssl = no");
        std::fs::write(&conf, text).expect("dovecot.conf");
        dovecot.relaunch();
        dovecot
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Every IMAP command clients sent, from the raw logs (`*.in` files).
    pub fn rawlog_commands(&self) -> String {
        let mut out = String::new();
        let mut stack = vec![self.dir.path().join("rawlog")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "in") {
                    out += &std::fs::read_to_string(&path).unwrap_or_default();
                }
            }
        }
        out
    }

    /// Files in a user's maildir folder (`""` for INBOX, `".Sent"` for Sent).
    pub fn maildir_count(&self, user: &str, folder: &str) -> usize {
        let base = self.dir.path().join("mail").join(user).join(folder);
        ["new", "cur"].iter().map(|sub| std::fs::read_dir(base.join(sub)).map(|d| d.count()).unwrap_or(0)).sum()
    }

    /// Writes messages straight into a user's maildir folder (`""` for INBOX, `".Sent"`),
    /// much faster than LMTP for large corpora. Dovecot indexes them on the next SELECT.
    pub fn write_maildir(&self, user: &str, folder: &str, messages: &[String]) {
        let base = self.dir.path().join("mail").join(user).join(folder);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(base.join(sub)).expect("maildir");
        }
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, raw) in messages.iter().enumerate() {
            let name = format!("{}.M{i}P{}R{call}.rig:2,S", 1_700_000_000 + i, std::process::id());
            std::fs::write(base.join("cur").join(name), raw).expect("write message");
        }
        run(Command::new("chown").args(["-R", "nobody:nogroup"]).arg(self.dir.path().join("mail").join(user)));
    }

    /// Forgets the folder's UIDs on disk so Dovecot assigns a new UIDVALIDITY (call while
    /// stopped).
    pub fn reset_uidvalidity(&self, user: &str, folder: &str) {
        let base = self.dir.path().join("mail").join(user).join(folder);
        for entry in std::fs::read_dir(&base).expect("maildir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("dovecot") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Delivers `raw` to `rcpt` over LMTP, as an MTA would.
    pub fn deliver(&self, rcpt: &str, raw: &str) {
        smtp_transaction(self.lmtp_port, true, "sender@example.net", &[rcpt], raw)
            .unwrap_or_else(|e| panic!("LMTP delivery to {rcpt} failed: {e}"));
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs one SMTP (or LMTP) transaction and returns the final reply of DATA.
pub fn smtp_transaction(port: u16, lmtp: bool, from: &str, to: &[&str], raw: &str) -> Result<String, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let mut reply = || -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if line.is_empty() {
                return Err(format!("connection closed after: {all}"));
            }
            all += &line;
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    };
    let expect = |r: String, code: char| if r.starts_with(code) { Ok(r) } else { Err(r) };
    expect(reply()?, '2')?;
    let mut send = |s: &str| writer.write_all(s.as_bytes()).map_err(|e| e.to_string());
    send(&format!("{} test.client\r\n", if lmtp { "LHLO" } else { "EHLO" }))?;
    expect(reply()?, '2')?;
    send(&format!("MAIL FROM:<{from}>\r\n"))?;
    expect(reply()?, '2')?;
    for rcpt in to {
        send(&format!("RCPT TO:<{rcpt}>\r\n"))?;
        expect(reply()?, '2')?;
    }
    send("DATA\r\n")?;
    expect(reply()?, '3')?;
    let mut body = String::new();
    for line in raw.replace("\r\n", "\n").split('\n') {
        if line.starts_with('.') {
            body.push('.');
        }
        body += line;
        body += "\r\n";
    }
    send(&body)?;
    send(".\r\n")?;
    let mut last = String::new();
    for _ in 0..(if lmtp { to.len() } else { 1 }) {
        last = expect(reply()?, '2')?;
    }
    send("QUIT\r\n")?;
    Ok(last)
}

/// A small RFC 5322 message.
pub fn message(from: &str, to: &str, subject: &str, message_id: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

// ---------------------------------------------------------------------------------------
// DNS

/// dnsmasq answering TXT records (DKIM keys, SPF, DMARC) for the `test` domain on a
/// loopback port; every other name under `test` is NXDOMAIN.
pub struct Dns {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Dns {
    pub fn start(txt: &[(&str, &str)]) -> Dns {
        let dir = shared_tempdir();
        let port = free_port();
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--local=/test/", "--user=root"])
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()));
        for (name, value) in txt {
            cmd.arg(format!("--txt-record={name},{value}"));
        }
        let log = dir.path().join("dnsmasq.log");
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("dnsmasq.log"))
            .spawn()
            .expect("spawn dnsmasq");
        wait_for_port(port, &mut child, "dnsmasq", &log);
        Dns { child, port, _dir: dir }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------
// Postfix

/// A private Postfix instance (`postfix -c DIR`) accepting SMTP on a loopback port and
/// relaying the given domains to LMTP ports through `transport_maps`.
pub struct Postfix {
    pub dir: TempDir,
    pub smtp_port: u16,
}

impl Postfix {
    pub fn start(relay: &[(&str, u16)]) -> Postfix {
        Postfix::start_with(relay, "")
    }

    /// With extra `main.cf` lines (SASL, TLS).
    pub fn start_with(relay: &[(&str, u16)], extra_main_cf: &str) -> Postfix {
        let transports: Vec<(&str, String)> =
            relay.iter().map(|(domain, port)| (*domain, format!("lmtp:inet:127.0.0.1:{port}"))).collect();
        Postfix::start_transports(&transports, extra_main_cf)
    }

    /// Relaying each domain through its Postfix transport, e.g. `smtp:[127.0.0.1]:2525`.
    pub fn start_transports(relay: &[(&str, String)], extra_main_cf: &str) -> Postfix {
        let dir = shared_tempdir();
        let d = dir.path();
        let conf = d.join("conf");
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir(d.join(sub)).expect("mkdir");
        }
        run(Command::new("chown").arg("postfix").arg(d.join("data")));
        std::fs::copy("/etc/postfix/master.cf", conf.join("master.cf")).expect("copy master.cf");
        let smtp_port = free_port();
        let transports =
            relay.iter().map(|(domain, transport)| format!("{domain}={transport}")).collect::<Vec<_>>().join(", ");
        let domains = relay.iter().map(|(domain, _)| *domain).collect::<Vec<_>>().join(", ");
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {q}\n\
             data_directory = {data}\n\
             maillog_file_prefixes = /var, /dev/stdout, {d}\n\
             maillog_file = {d}/maillog\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = relay.test\n\
             mydestination =\n\
             mynetworks = 127.0.0.0/8\n\
             relay_domains = {domains}\n\
             transport_maps = inline:{{ {transports} }}\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             lmtp_host_lookup = native\n\
             smtp_host_lookup = native\n\
             queue_run_delay = 1s\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n{extra_main_cf}\n",
            q = d.join("queue").display(),
            data = d.join("data").display(),
            d = d.display(),
        );
        std::fs::write(conf.join("main.cf"), main_cf).expect("main.cf");
        // Our own listener instead of port 25; no chroot so no /etc copies are needed.
        let c = conf.display().to_string();
        run(Command::new("postconf").args(["-c", &c, "-M#", "smtp/inet"]));
        run(Command::new("postconf").args(["-c", &c, "-F", "*/*/chroot = n"]));
        run(Command::new("postconf")
            .args(["-c", &c, "-M"])
            .arg(format!("127.0.0.1:{smtp_port}/inet = 127.0.0.1:{smtp_port} inet n - n - - smtpd")));
        run(Command::new("postfix").args(["-c", &c, "start"]));
        let log = d.join("maillog");
        poll(START_DEADLINE, "postfix smtpd", || TcpStream::connect(("127.0.0.1", smtp_port)).ok().map(|_| ()));
        let _ = log;
        Postfix { dir, smtp_port }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let conf = self.dir.path().join("conf");
        let _ = Command::new("postfix").arg("-c").arg(conf).arg("abort").output();
    }
}

/// Postfix's `smtp-sink`: accepts (or, with `args`, faults) SMTP and discards the mail.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl SmtpSink {
    /// `args` are smtp-sink(1) options placed before the address (fault modes and such).
    pub fn start(args: &[&str]) -> SmtpSink {
        SmtpSink::start_on(free_port(), args)
    }

    /// On a given port (a relay that comes back where it was).
    pub fn start_on(port: u16, args: &[&str]) -> SmtpSink {
        let dir = shared_tempdir();
        // It runs as nobody and may dump mail here.
        set_mode(dir.path(), 0o777);
        let log = dir.path().join("sink.log");
        let mut child = Command::new("smtp-sink")
            .args(["-u", "nobody"])
            .args(args)
            .arg(format!("127.0.0.1:{port}"))
            .arg("100")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("sink.log"))
            .spawn()
            .expect("cannot start smtp-sink (is postfix installed?)");
        wait_for_port(port, &mut child, "smtp-sink", &log);
        SmtpSink { child, port, dir }
    }
}

impl SmtpSink {
    /// Messages received so far, when started with `-d mail/%H%M%S.` (one file each).
    pub fn dumped(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail")) else { return Vec::new() };
        entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------
// Radicale

/// Radicale serving CardDAV on a loopback port; any user name and password is accepted.
pub struct Radicale {
    pub dir: TempDir,
    child: Child,
    pub port: u16,
}

impl Radicale {
    pub fn start() -> Radicale {
        let dir = shared_tempdir();
        let port = free_port();
        let log = dir.path().join("radicale.log");
        let mut child = Command::new("radicale")
            .arg("--server-hosts")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--storage-filesystem-folder")
            .arg(dir.path().join("collections"))
            .args(["--auth-type", "none", "--rights-type", "owner_only", "--logging-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("radicale.log"))
            .spawn()
            .expect("cannot start radicale (is it installed?)");
        wait_for_port(port, &mut child, "radicale", &log);
        Radicale { dir, child, port }
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Xandikos (CardDAV/CalDAV) serving `/alice/` as the current user's principal, with no
/// authentication of its own (as behind a reverse proxy).
pub struct Xandikos {
    pub dir: TempDir,
    child: Child,
    pub port: u16,
}

impl Xandikos {
    pub fn start() -> Xandikos {
        let dir = shared_tempdir();
        let port = free_port();
        let log = dir.path().join("xandikos.log");
        let mut child = Command::new("xandikos")
            .arg("-d")
            .arg(dir.path().join("data"))
            .args(["-l", "127.0.0.1", "-p", &port.to_string(), "--autocreate", "--current-user-principal", "/alice/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("xandikos.log"))
            .spawn()
            .expect("cannot start xandikos (is it installed?)");
        wait_for_port(port, &mut child, "xandikos", &log);
        Xandikos { dir, child, port }
    }
}

impl Drop for Xandikos {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------
// Databases

/// Base URL of the machine's PostgreSQL server (trust auth).
pub fn pg_base_url() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A store for one test: a SQLite file, or a PostgreSQL database created for the test
/// and dropped afterwards.
pub enum TestDb {
    Sqlite { dir: TempDir, url: String },
    Postgres { name: String, url: String },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/mailsync.db", dir.path().display());
        TestDb::Sqlite { dir, url }
    }

    pub fn postgres() -> TestDb {
        let mut suffix = [0u8; 6];
        mailsync::secrets::random_bytes(&mut suffix).expect("random");
        let name = format!("mailsync_test_{}", hex::encode(suffix));
        psql(&format!("CREATE DATABASE {name}"));
        let url = format!("{}/{name}", pg_base_url());
        TestDb::Postgres { name, url }
    }

    /// Both backends, for tests that must pass on each.
    pub fn both() -> [TestDb; 2] {
        [TestDb::sqlite(), TestDb::postgres()]
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            TestDb::Sqlite { .. } => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    pub async fn store(&self) -> mailsync::store::Store {
        let store = mailsync::store::Store::connect(self.url(), 4, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.label()));
        store.migrate().await.unwrap_or_else(|e| panic!("{}: {e}", self.label()));
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name, .. } = self {
            psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn psql(sql: &str) {
    run(Command::new("psql").arg(format!("{}/postgres", pg_base_url())).args([
        "-v",
        "ON_ERROR_STOP=1",
        "-q",
        "-c",
        sql,
    ]));
}

// ---------------------------------------------------------------------------------------
// The mailsync binary

pub const BIN: &str = env!("CARGO_BIN_EXE_mailsync");

/// A `mailsync` command with a config file in `dir`, and no `MAILSYNC_*` from our own
/// environment leaking in, on a migrated store: the first call writes the config (see
/// [`write_config`]) if there is none and runs `mailsync migrate` once per directory
/// (CLI commands other than `run` and `migrate` refuse an unmigrated store).
pub fn mailsync(dir: &Path, db_url: &str) -> Command {
    let marker = dir.join(".migrated");
    if !marker.exists() {
        ok(mailsync_unmigrated(dir, db_url).arg("migrate"));
        std::fs::write(&marker, "").expect("write migration marker");
    }
    mailsync_unmigrated(dir, db_url)
}

/// [`mailsync`] without the one-time `migrate`.
pub fn mailsync_unmigrated(dir: &Path, db_url: &str) -> Command {
    let config = dir.join("mailsync.toml");
    if !config.exists() {
        write_config(dir, db_url, "");
    }
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MAILSYNC_")) {
        cmd.env_remove(k);
    }
    cmd.arg("--config").arg(config).current_dir(dir);
    cmd
}

/// Writes `dir/mailsync.toml` for a test: its own ports and files, quick account pickup,
/// and `sync_extra` lines added to the `[sync]` section.
pub fn write_config(dir: &Path, db_url: &str, sync_extra: &str) {
    std::fs::write(
        dir.join("mailsync.toml"),
        format!(
            "[database]\nurl = \"{db_url}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n\
             token_file = \"{d}/api-tokens\"\n[secrets]\nkey_file = \"{d}/master.key\"\n\
             [bcc_drop]\nlisten = \"127.0.0.1:{bcc}\"\n[sync]\naccount_check_ms = 200\n\
             connect_timeout_secs = 5\nio_timeout_secs = 20\nbackoff_max_secs = 2\n{sync_extra}\n\
             [log]\nformat = \"text\"\nlevel = \"info,mailsync=debug\"\n",
            port = free_port(),
            bcc = free_port(),
            d = dir.display(),
        ),
    )
    .expect("write config");
}

/// Adds `keys` to the `[bcc_drop]` section `write_config` wrote; returns the listener's port.
pub fn bcc_drop_config(dir: &Path, keys: &str) -> u16 {
    let path = dir.join("mailsync.toml");
    let config =
        std::fs::read_to_string(&path).expect("config").replace("[bcc_drop]\n", &format!("[bcc_drop]\n{keys}\n"));
    std::fs::write(&path, &config).expect("write config");
    bcc_drop_port(&config)
}

/// The BCC-drop listener's port in a configuration `write_config` wrote.
pub fn bcc_drop_port(config: &str) -> u16 {
    config
        .split("[bcc_drop]")
        .nth(1)
        .and_then(|s| s.split("listen = \"127.0.0.1:").nth(1))
        .and_then(|s| s.split('"').next())
        .and_then(|p| p.parse().ok())
        .expect("bcc_drop port")
}

/// Adds an IMAPS account on `dovecot` for `user` via the CLI; returns its id.
pub fn add_account(dir: &Path, db_url: &str, dovecot: &Dovecot, user: &str, password: &str) -> i64 {
    let out = ok(mailsync(dir, db_url)
        .args(["account", "add", "--email", user, "--imap-host", "localhost", "--tls", "implicit", "--json"])
        .arg("--imap-port")
        .arg(dovecot.imaps_port.to_string())
        .arg("--ca-file")
        .arg(&certs().ca)
        .args(["--password-env", "TEST_ACCOUNT_PASSWORD"])
        .env("TEST_ACCOUNT_PASSWORD", password));
    serde_json::from_str::<serde_json::Value>(&out).expect("json")["id"].as_i64().expect("id")
}

/// Output of a finished command, for assertions.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert_eq!(out.code, 0, "{cmd:?} failed: {}{}", out.stdout, out.stderr);
    out.stdout
}

/// A running `mailsync run`, stopped with SIGTERM on drop.
pub struct Daemon {
    pub child: Child,
    pub api_port: u16,
    pub token: String,
    pub dir: PathBuf,
}

impl Daemon {
    /// Starts `mailsync run` with the config `mailsync()` writes in `dir`; waits for /readyz.
    pub fn start(dir: &Path, db_url: &str) -> Daemon {
        Daemon::start_with_env(dir, db_url, &[])
    }

    /// With extra environment variables (e.g. systemd's NOTIFY_SOCKET).
    pub fn start_with_env(dir: &Path, db_url: &str, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = mailsync(dir, db_url);
        cmd.envs(env.iter().copied());
        let config = std::fs::read_to_string(dir.join("mailsync.toml")).expect("config");
        let api_port: u16 = config
            .split("listen = \"127.0.0.1:")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|p| p.parse().ok())
            .expect("api port in config");
        let log = dir.join("daemon.log");
        let mut child = cmd
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("daemon.log"))
            .spawn()
            .expect("spawn mailsync run");
        poll(START_DEADLINE, "mailsync /readyz", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("mailsync exited with {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            http(api_port, "GET", "/readyz", None, None).ok().filter(|r| r.0 == 200)
        });
        let token = std::fs::read_to_string(dir.join("api-tokens"))
            .expect("token file")
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .expect("a token")
            .trim()
            .to_string();
        Daemon { child, api_port, token, dir: dir.to_path_buf() }
    }

    /// An authenticated API call; returns status and parsed JSON body (Null when empty).
    pub fn api(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> (u16, serde_json::Value) {
        let (status, text) =
            http(self.api_port, method, path, Some(&self.token), body.map(|b| b.to_string()).as_deref())
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
        };
        (status, json)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        poll(Duration::from_secs(20), "mailsync to exit", || self.child.try_wait().ok().flatten())
    }
}

impl Daemon {
    /// The daemon's `/v1/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, text) =
            http(self.api_port, "GET", "/v1/metrics", Some(&self.token), None).expect("GET /v1/metrics");
        assert_eq!(status, 200, "{text}");
        text
    }
}

/// The value of the sample `series` (name with its labels, as written) in a Prometheus
/// text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls an outbox entry through the API until it is sent or failed; returns it.
pub fn wait_outbox_final(daemon: &Daemon, id: i64, deadline: Duration) -> serde_json::Value {
    poll(deadline, &format!("outbox {id} sent or failed"), || {
        let (_, entry) = daemon.api("GET", &format!("/v1/outbox/{id}"), None);
        matches!(entry["status"].as_str(), Some("sent" | "failed")).then_some(entry)
    })
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(token) = token {
        request += &format!("Authorization: Bearer {token}\r\n");
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    request += "\r\n";
    request += body;
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    Ok((status, body.to_string()))
}
