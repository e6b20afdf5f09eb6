//! A deterministic mail corpus shaped like a salesperson's mailbox: replies, multipart
//! alternatives, attachments and the occasional mass mailing.

/// xorshift64*: small, fast, and the same corpus on every machine for a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const WORDS: &[&str] = &[
    "proposal",
    "pricing",
    "contract",
    "renewal",
    "meeting",
    "quarter",
    "forecast",
    "invoice",
    "discount",
    "licence",
    "support",
    "onboarding",
    "timeline",
    "budget",
    "approval",
    "follow",
    "up",
    "call",
    "next",
    "week",
    "thanks",
    "regards",
    "please",
    "attached",
    "review",
    "team",
    "update",
    "the",
    "a",
    "we",
    "you",
    "and",
    "to",
    "for",
    "on",
    "with",
    "our",
    "your",
    "is",
    "will",
    "can",
    "this",
    "that",
    "deal",
];

pub struct Corpus {
    /// Raw messages for INBOX and for Sent.
    pub inbox: Vec<String>,
    pub sent: Vec<String>,
    pub bytes: u64,
    pub with_attachments: usize,
    pub mass_mailings: usize,
    pub replies: usize,
}

/// The 2,000 addresses the corpus's mail is exchanged with (the CRM's contacts).
pub fn correspondents() -> Vec<String> {
    (0..2000).map(|i| format!("contact{i}@client{}.example", i % 300)).collect()
}

/// `total` messages, 80% INBOX and 20% Sent, 10% with 10-200 KB attachments, 1% with
/// more than 100 recipients, 40% replies; text bodies sized so that 50,000 messages
/// come to about 870 MB.
pub fn generate(user: &str, total: usize, seed: u64) -> Corpus {
    let mut rng = Rng::new(seed);
    let contacts = correspondents();
    let mut corpus =
        Corpus { inbox: Vec::new(), sent: Vec::new(), bytes: 0, with_attachments: 0, mass_mailings: 0, replies: 0 };
    let base_time: i64 = 1_735_689_600; // 2025-01-01
    // Conversations: a reply continues one of the recently active ones, as in real mail.
    let mut conversations: Vec<Vec<usize>> = Vec::new();
    for i in 0..total {
        let sent = i % 5 == 4;
        let contact = &contacts[rng.below(contacts.len() as u64) as usize];
        let (from, mut to) =
            if sent { (user.to_string(), contact.clone()) } else { (contact.clone(), user.to_string()) };
        let mass = rng.chance(1);
        if mass {
            let n = 101 + rng.below(100) as usize;
            to = (0..n).map(|k| format!("list{k}@bulk.example")).collect::<Vec<_>>().join(",\r\n ");
            corpus.mass_mailings += 1;
        }
        let reply = !conversations.is_empty() && rng.chance(40);
        let mut threading = String::new();
        let mut subject = format!("{} {}", WORDS[rng.below(WORDS.len() as u64) as usize], i);
        if reply {
            let recent = conversations.len().min(300);
            let c = conversations.len() - 1 - rng.below(recent as u64) as usize;
            let chain = &mut conversations[c];
            let parent = *chain.last().unwrap_or(&0);
            let refs: Vec<String> =
                chain.iter().rev().take(10).rev().map(|m| format!("<bench-{m}@corpus.example>")).collect();
            threading = format!("In-Reply-To: <bench-{parent}@corpus.example>\r\nReferences: {}\r\n", refs.join(" "));
            subject = format!("Re: thread {}", chain[0]);
            chain.push(i);
            corpus.replies += 1;
        } else {
            conversations.push(vec![i]);
        }
        let date = date_header(base_time + i as i64 * 600);
        let cc = if rng.chance(20) {
            format!("Cc: {}\r\n", contacts[rng.below(contacts.len() as u64) as usize])
        } else {
            String::new()
        };
        let head = format!(
            "From: {from}\r\nTo: {to}\r\n{cc}Subject: {subject}\r\nDate: {date}\r\nMessage-ID: <bench-{i}@corpus.example>\r\n{threading}MIME-Version: 1.0\r\n"
        );
        let text_len = 1_000 + rng.below(7_000) as usize;
        let text = text_body(&mut rng, text_len);
        let attachment = rng.chance(10);
        let raw = if attachment {
            corpus.with_attachments += 1;
            let size = 10_000 + rng.below(190_000) as usize;
            format!(
                "{head}Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n--mix\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--mix\r\n\
                 Content-Type: application/pdf; name=\"quote-{i}.pdf\"\r\nContent-Disposition: attachment; filename=\"quote-{i}.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--mix--\r\n",
                base64_lines(&mut rng, size * 3 / 4)
            )
        } else if rng.chance(50) {
            format!(
                "{head}Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
                 --alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>{}</p></body></html>\r\n--alt--\r\n",
                text.replace("\r\n", "</p>\r\n<p>")
            )
        } else {
            format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
        };
        corpus.bytes += raw.len() as u64;
        if sent {
            corpus.sent.push(raw);
        } else {
            corpus.inbox.push(raw);
        }
    }
    corpus
}

fn text_body(rng: &mut Rng, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 80);
    let mut line = 0;
    while out.len() < bytes {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        out.push_str(w);
        line += w.len() + 1;
        if line > 70 {
            out.push_str("\r\n");
            line = 0;
        } else {
            out.push(' ');
        }
    }
    out
}

fn base64_lines(rng: &mut Rng, raw_bytes: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let chars = raw_bytes.div_ceil(3) * 4;
    let mut out = String::with_capacity(chars + chars / 76 * 2);
    for i in 0..chars {
        out.push(ALPHABET[(rng.next() >> 58) as usize] as char);
        if i % 76 == 75 {
            out.push_str("\r\n");
        }
    }
    out
}

fn date_header(unix: i64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day} {} {year} {:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
