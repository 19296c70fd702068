//! A local SMTP sink on 127.0.0.1 for tests: it accepts every message (with or without a
//! PLAIN or LOGIN login) and keeps it, so tests can read what a server mailed. Plain threads
//! and blocking sockets, so sync and async tests both use it. Optionally each message is also
//! written to a folder (for scripts in other languages to read).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One message as received.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The login used, if any: (username, password).
    pub login: Option<(String, String)>,
    /// The message as sent (headers and body, dot-unstuffed).
    pub raw: String,
}

impl Mail {
    /// The `Subject` header (single line).
    pub fn subject(&self) -> String {
        header(&self.raw, "Subject")
    }

    /// The text with quoted-printable soft line breaks and escapes undone (enough to search
    /// for words and numbers in either part).
    pub fn text(&self) -> String {
        let joined = self.raw.replace("=\r\n", "").replace("=\n", "");
        let mut out = Vec::with_capacity(joined.len());
        let bytes = joined.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The first run of at least `min` digits that follows `after` in the text.
    pub fn digits_after(&self, after: &str, min: usize) -> Option<String> {
        let text = self.text();
        let start = text.find(after)? + after.len();
        let rest = &text[start..];
        let from = rest.find(|c: char| c.is_ascii_digit())?;
        let digits: String = rest[from..].chars().take_while(char::is_ascii_digit).collect();
        (digits.len() >= min).then_some(digits)
    }
}

fn header(raw: &str, name: &str) -> String {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    raw.lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .unwrap_or_default()
}

/// The sink: its port, and every message it got.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    dir: Option<PathBuf>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        Self::start_writing_to(None)
    }

    /// Also writes each message to `dir/<n>.eml`, numbered from 1.
    pub fn start_writing_to(dir: Option<PathBuf>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink = SmtpSink { port: listener.local_addr().unwrap().port(), mails: Arc::default(), dir };
        let s = sink.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = s.serve(stream);
                });
            }
        });
        sink
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    pub fn mails_to(&self, address: &str) -> Vec<Mail> {
        self.mails().into_iter().filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(address))).collect()
    }

    pub fn clear(&self) {
        self.mails.lock().unwrap().clear();
    }

    fn serve(&self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut out = stream.try_clone()?;
        let mut lines = BufReader::new(stream);
        let mut reply = |text: &str| out.write_all(format!("{text}\r\n").as_bytes());
        reply("220 sink ESMTP ready")?;
        let (mut from, mut to, mut login) = (String::new(), Vec::new(), None);
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_string();
            let upper = command.to_ascii_uppercase();
            if upper.starts_with("EHLO") {
                reply("250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME")?;
            } else if upper.starts_with("HELO") {
                reply("250 sink")?;
            } else if upper.starts_with("AUTH PLAIN") {
                let encoded = match command.split_whitespace().nth(2) {
                    Some(e) => e.to_string(),
                    None => {
                        reply("334 ")?;
                        read_line(&mut lines)?
                    }
                };
                let decoded = decode_base64(&encoded);
                let parts: Vec<&str> = decoded.split('\0').collect();
                login = Some((parts.get(1).unwrap_or(&"").to_string(), parts.get(2).unwrap_or(&"").to_string()));
                reply("235 ok")?;
            } else if upper.starts_with("AUTH LOGIN") {
                reply("334 VXNlcm5hbWU6")?;
                let user = decode_base64(&read_line(&mut lines)?);
                reply("334 UGFzc3dvcmQ6")?;
                let password = decode_base64(&read_line(&mut lines)?);
                login = Some((user, password));
                reply("235 ok")?;
            } else if upper.starts_with("MAIL FROM:") {
                from = address(&command[10..]);
                to.clear();
                reply("250 ok")?;
            } else if upper.starts_with("RCPT TO:") {
                to.push(address(&command[8..]));
                reply("250 ok")?;
            } else if upper == "DATA" {
                reply("354 go on")?;
                let mut raw = String::new();
                loop {
                    let l = read_line(&mut lines)?;
                    if l == "." {
                        break;
                    }
                    raw.push_str(l.strip_prefix('.').unwrap_or(&l));
                    raw.push_str("\r\n");
                }
                let mail = Mail { from: from.clone(), to: to.clone(), login: login.clone(), raw };
                let mut mails = self.mails.lock().unwrap();
                mails.push(mail.clone());
                if let Some(dir) = &self.dir {
                    let _ = std::fs::write(dir.join(format!("{}.eml", mails.len())), &mail.raw);
                }
                drop(mails);
                reply("250 queued")?;
            } else if upper == "QUIT" {
                reply("221 bye")?;
                return Ok(());
            } else if upper == "RSET" || upper == "NOOP" {
                reply("250 ok")?;
            } else {
                reply("502 not implemented")?;
            }
        }
    }
}

fn read_line(lines: &mut impl BufRead) -> std::io::Result<String> {
    let mut l = String::new();
    if lines.read_line(&mut l)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(l.trim_end_matches(['\r', '\n']).to_string())
}

/// `<a@b>` (with or without parameters after it) → `a@b`.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(a), Some(b)) if a < b => arg[a + 1..b].to_string(),
        _ => arg.split_whitespace().next().unwrap_or("").to_string(),
    }
}

fn decode_base64(text: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Deep-merges `patch` into `target` (objects key by key, anything else replaced).
pub fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Writes into a stopped server's `data.db`, as PocketBase's own API would store them: the
/// settings row's `smtp` pointing at `port` on 127.0.0.1, a sender and app name and URL, and
/// each `(collection, patch)` merged into that collection's options.
pub fn configure(dir: &Path, port: u16, collections: &[(&str, serde_json::Value)]) {
    let conn = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let raw: Vec<u8> = conn
        .query_row("SELECT CAST(value AS BLOB) FROM _params WHERE id = 'settings'", [], |r| r.get(0))
        .unwrap();
    let mut settings: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    merge(&mut settings, &serde_json::json!({
        "smtp": {"enabled": true, "host": "127.0.0.1", "port": port, "username": "", "password": "",
                 "authMethod": "", "tls": false, "localName": ""},
        "meta": {"appName": "Acme", "appURL": "https://acme.test", "senderName": "Acme Support", "senderAddress": "support@acme.test"}
    }));
    conn.execute("UPDATE _params SET value = ?1 WHERE id = 'settings'", [settings.to_string()]).unwrap();
    for (name, patch) in collections {
        let raw: String = conn.query_row("SELECT options FROM _collections WHERE name = ?1", [name], |r| r.get(0)).unwrap();
        let mut options: serde_json::Value = serde_json::from_str(&raw).unwrap();
        merge(&mut options, patch);
        conn.execute("UPDATE _collections SET options = ?1 WHERE name = ?2", rusqlite::params![options.to_string(), name]).unwrap();
    }
}

/// `_superusers` with MFA and OTP on (an 8-digit code, mailed as `CODE:<code>:END`), the settings'
/// SMTP pointing at a sink that also writes each mail into `<dir>/../mail` for scripts to read.
/// Returns the sink and that mail folder.
pub fn mfa_on_superusers(dir: &Path) -> (SmtpSink, PathBuf) {
    let mail_dir = dir.parent().expect("a data dir inside a folder of its own").join("mail");
    std::fs::create_dir_all(&mail_dir).unwrap();
    let sink = SmtpSink::start_writing_to(Some(mail_dir.clone()));
    let options = serde_json::json!({
        "mfa": {"enabled": true, "duration": 600, "rule": ""},
        "otp": {"enabled": true, "duration": 180, "length": 8,
                "emailTemplate": {"subject": "Code", "body": "<p>CODE:{OTP}:END</p>"}}
    });
    configure(dir, sink.port, &[("_superusers", options)]);
    (sink, mail_dir)
}
