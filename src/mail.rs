//! The one way out for e-mail: a message goes through SMTP configured as PocketBase configures
//! it (the settings row's `smtp`), or through the local `sendmail` when SMTP is off, as
//! PocketBase falls back to it. It knows nothing of HTTP or accounts: callers hand it a
//! [`MailConfig`] and a [`Message`]. Every send is bounded in time.
//!
//! Also here: e-mail templates with PocketBase's placeholders (`{APP_NAME}`, `{OTP}`, …),
//! resolved into a subject and an HTML body, and the plain-text part made from that body.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// How long one message may take to go out, connection and all (PocketBase waits 15 s for a
/// login alert); a mail server that hangs costs a task no longer than this.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Where `sendmail` is looked for when it is not on `PATH`, as PocketBase does.
const SENDMAIL_PATHS: [&str; 2] = ["/usr/sbin/sendmail", "/usr/bin/sendmail"];

/// SMTP login mechanism; PocketBase's `smtp.authMethod` (empty means PLAIN).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMethod {
    #[default]
    Plain,
    Login,
}

/// PocketBase's `smtp` settings, as far as sending needs them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// Empty: no login.
    pub username: String,
    pub password: String,
    pub auth_method: AuthMethod,
    /// Implicit TLS from the first byte (SMTPS, usually port 465). Otherwise plain, upgraded
    /// with STARTTLS when the server offers it.
    pub tls: bool,
    /// The name given in EHLO; empty: `localhost`.
    pub local_name: String,
}

// Hand-written so that the password never reaches a log line.
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("auth_method", &self.auth_method)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// How mail leaves this server, and from whom.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailConfig {
    /// `None`: the local `sendmail`.
    pub smtp: Option<SmtpConfig>,
    pub sender_name: String,
    pub sender_address: String,
}

/// One message to send: HTML body, with a plain-text part made from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub to: Vec<String>,
    pub subject: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address {address:?}: {source}")]
    Address { address: String, source: lettre::address::AddressError },
    #[error("the message has no recipient")]
    NoRecipient,
    #[error("message could not be built: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("SMTP is off and no sendmail executable was found (PATH, {})", SENDMAIL_PATHS.join(", "))]
    NoSendmail,
    #[error("sendmail: {0}")]
    Sendmail(#[from] lettre::transport::sendmail::Error),
    #[error("sending took longer than {}s", SEND_TIMEOUT.as_secs())]
    Timeout,
}

/// Sends `message` as `config` says, within [`SEND_TIMEOUT`].
pub async fn send(config: &MailConfig, message: &Message) -> Result<(), MailError> {
    send_within(config, message, SEND_TIMEOUT).await
}

pub async fn send_within(config: &MailConfig, message: &Message, limit: Duration) -> Result<(), MailError> {
    let email = build(config, message)?;
    let sending = async {
        match &config.smtp {
            Some(smtp) => {
                smtp_transport(smtp, limit)?.send(email).await?;
            }
            None => {
                let sendmail = find_sendmail().ok_or(MailError::NoSendmail)?;
                AsyncSendmailTransport::<Tokio1Executor>::new_with_command(sendmail).send(email).await?;
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, sending).await.map_err(|_| MailError::Timeout)?
}

/// An address as PocketBase accepts one (`meta.senderAddress`, request-otp's `email`):
/// `local@domain` with a dotted domain, no display name, no spaces.
pub fn is_address(address: &str) -> bool {
    !address.contains(char::is_whitespace)
        && address.len() <= 254
        && address.parse::<Address>().is_ok_and(|a| a.domain().contains('.'))
}

fn parse_address(address: &str) -> Result<Address, MailError> {
    address.trim().parse().map_err(|source| MailError::Address { address: address.to_string(), source })
}

fn build(config: &MailConfig, message: &Message) -> Result<lettre::Message, MailError> {
    let name = Some(config.sender_name.trim().to_string()).filter(|n| !n.is_empty());
    let from = Mailbox::new(name, parse_address(&config.sender_address)?);
    let mut builder = lettre::Message::builder().from(from).subject(message.subject.as_str());
    if message.to.is_empty() {
        return Err(MailError::NoRecipient);
    }
    for to in &message.to {
        builder = builder.to(Mailbox::new(None, parse_address(to)?));
    }
    let html = html_document(&message.html);
    Ok(builder.multipart(MultiPart::alternative_plain_html(plain_text(&message.html), html))?)
}

fn smtp_transport(smtp: &SmtpConfig, limit: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let tls_parameters = || TlsParameters::new(smtp.host.clone());
    let tls = if smtp.tls { Tls::Wrapper(tls_parameters()?) } else { Tls::Opportunistic(tls_parameters()?) };
    let local_name = if smtp.local_name.trim().is_empty() { "localhost" } else { smtp.local_name.trim() };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .hello_name(ClientId::Domain(local_name.to_string()))
        .timeout(Some(limit));
    if !smtp.username.is_empty() {
        let mechanism = match smtp.auth_method {
            AuthMethod::Plain => Mechanism::Plain,
            AuthMethod::Login => Mechanism::Login,
        };
        builder = builder
            .credentials(Credentials::new(smtp.username.clone(), smtp.password.clone()))
            .authentication(vec![mechanism]);
    }
    Ok(builder.build())
}

/// `sendmail` on `PATH`, else at one of the usual places.
fn find_sendmail() -> Option<PathBuf> {
    find_sendmail_in(std::env::var_os("PATH"))
}

fn find_sendmail_in(path: Option<std::ffi::OsString>) -> Option<PathBuf> {
    let on_path = path
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("sendmail"));
    on_path.chain(SENDMAIL_PATHS.iter().map(PathBuf::from)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A subject and an HTML body with `{PLACEHOLDER}`s, as PocketBase keeps them in a
/// collection's options (`otp.emailTemplate`, `authAlert.emailTemplate`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template {
    pub subject: String,
    pub body: String,
}

impl Template {
    /// The subject and body with every `(placeholder, value)` replaced. Values go in as given:
    /// the caller escapes what comes from users (see [`escape_html`]).
    pub fn resolve(&self, placeholders: &[(String, String)]) -> (String, String) {
        let mut subject = self.subject.clone();
        let mut body = self.body.clone();
        for (key, value) in placeholders {
            subject = subject.replace(key.as_str(), value);
            body = body.replace(key.as_str(), value);
        }
        (subject, body)
    }
}

/// `&`, `<`, `>`, `"` and `'` as HTML entities.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A template's HTML fragment as a whole document.
fn html_document(fragment: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\" />\n</head>\n<body>\n{fragment}\n</body>\n</html>\n"
    )
}

/// The text of an HTML fragment for the plain-text part: tags dropped (a line break after
/// paragraphs and `<br>`), the common entities decoded, blank lines collapsed. Templates are
/// short and simple, so a tag stripper does; an HTML-to-text crate would render tables and
/// links we never send.
pub fn plain_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            rest = &rest[start..];
            break;
        };
        let tag = rest[start + 1..start + end].trim().to_ascii_lowercase();
        let name = tag.trim_start_matches('/').split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or("");
        if matches!(name, "br" | "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4") {
            text.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    text.push_str(rest);
    let text = text
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn placeholders_are_replaced_in_subject_and_body() {
        let t = Template { subject: "OTP for {APP_NAME}".into(), body: "<p>{OTP} ({OTP_ID}) for {RECORD:email} at {APP_URL}, {OTP}</p>".into() };
        let (subject, body) = t.resolve(&pairs(&[
            ("{APP_NAME}", "Acme"),
            ("{APP_URL}", "https://acme.test"),
            ("{OTP}", "01234567"),
            ("{OTP_ID}", "abc"),
            ("{RECORD:email}", "a@b.test"),
        ]));
        assert_eq!(subject, "OTP for Acme");
        assert_eq!(body, "<p>01234567 (abc) for a@b.test at https://acme.test, 01234567</p>");
        // An unknown placeholder is left as written.
        assert_eq!(Template { subject: "{NOPE}".into(), body: String::new() }.resolve(&[]).0, "{NOPE}");
    }

    #[test]
    fn addresses_as_pocketbase_accepts_them() {
        for ok in ["a@b.co", "first.last+tag@sub.example.com", "x_y@my-host.example"] {
            assert!(is_address(ok), "{ok}");
        }
        for bad in ["", "a@b", "Name <a@b.co>", "a b@c.de", "a@b.co ", "@b.co", "a@", "not an email"] {
            assert!(!is_address(bad), "{bad}");
        }
    }

    #[test]
    fn html_escaping_covers_markup_and_quotes() {
        assert_eq!(escape_html(r#"<script>"a" & 'b'</script>"#), "&lt;script&gt;&#34;a&#34; &amp; &#39;b&#39;&lt;/script&gt;");
    }

    #[test]
    fn plain_text_drops_tags_and_keeps_lines() {
        let html = "<p>Hello,</p>\n<p>Your code: <strong>123</strong></p><p>A &amp; B &lt;x&gt;<br/>next</p>\n<p>\n  Thanks,<br/>\n  team\n</p>";
        assert_eq!(plain_text(html), "Hello,\nYour code: 123\nA & B <x>\nnext\nThanks,\nteam");
        assert_eq!(plain_text("no tags at all"), "no tags at all");
        assert_eq!(plain_text("broken <tag"), "broken <tag");
    }

    #[test]
    fn a_message_is_built_with_both_parts_and_refused_without_valid_addresses() {
        let config = MailConfig { smtp: None, sender_name: "Acme Support".into(), sender_address: "support@acme.test".into() };
        let message = Message { to: vec!["user@acme.test".into()], subject: "Hi".into(), html: "<p>x &amp; y</p>".into() };
        let raw = String::from_utf8(build(&config, &message).unwrap().formatted()).unwrap();
        assert!(raw.contains("From: \"Acme Support\" <support@acme.test>") || raw.contains("From: Acme Support <support@acme.test>"), "{raw}");
        assert!(raw.contains("To: user@acme.test"), "{raw}");
        assert!(raw.contains("text/plain") && raw.contains("text/html"), "{raw}");
        assert!(raw.contains("x & y"), "{raw}");

        let no_sender = MailConfig { sender_address: "not an address".into(), ..config.clone() };
        assert!(matches!(build(&no_sender, &message), Err(MailError::Address { .. })));
        let nobody = Message { to: vec![], ..message.clone() };
        assert!(matches!(build(&config, &nobody), Err(MailError::NoRecipient)));
        let bad_to = Message { to: vec!["x".into()], ..message };
        assert!(matches!(build(&config, &bad_to), Err(MailError::Address { .. })));
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_within_the_limit() {
        // A port nobody listens on: refused at once, well inside the limit.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = MailConfig {
            smtp: Some(SmtpConfig { host: "127.0.0.1".into(), port, ..Default::default() }),
            sender_name: String::new(),
            sender_address: "a@acme.test".into(),
        };
        let message = Message { to: vec!["b@acme.test".into()], subject: "s".into(), html: "h".into() };
        assert!(matches!(send(&config, &message).await, Err(MailError::Smtp(_))));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up() {
        // Accepts, then says nothing: the send ends with an error once the limit passes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = MailConfig {
            smtp: Some(SmtpConfig { host: "127.0.0.1".into(), port, ..Default::default() }),
            sender_name: String::new(),
            sender_address: "a@acme.test".into(),
        };
        let message = Message { to: vec!["b@acme.test".into()], subject: "s".into(), html: "h".into() };
        let sent = send_within(&config, &message, Duration::from_millis(300)).await;
        assert!(matches!(sent, Err(MailError::Timeout | MailError::Smtp(_))), "{sent:?}");
        drop(listener);
    }

    #[tokio::test]
    async fn without_smtp_the_local_sendmail_is_used() {
        // A stand-in sendmail that keeps what it is given, found in the folder given as PATH
        // (passed in: the process's own PATH is every test's).
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got.eml");
        let script = dir.path().join("sendmail");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$@\" > {0}.args\ncat > {0}\n", out.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(find_sendmail_in(Some(dir.path().as_os_str().to_owned())), Some(script.clone()));
        let config = MailConfig { smtp: None, sender_name: "Acme".into(), sender_address: "a@acme.test".into() };
        let message = Message { to: vec!["b@acme.test".into()], subject: "Via sendmail".into(), html: "<p>hi</p>".into() };
        AsyncSendmailTransport::<Tokio1Executor>::new_with_command(&script).send(build(&config, &message).unwrap()).await.unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert!(got.contains("Subject: Via sendmail"), "{got}");
        let args = std::fs::read_to_string(format!("{}.args", out.display())).unwrap();
        assert!(args.contains("b@acme.test") && args.contains("a@acme.test"), "{args}");
    }

    proptest::proptest! {
        /// Templates come from a data dir: any text turns into plain text without a panic,
        /// and (entities aside, which may spell `<` and `>`) no tag survives.
        #[test]
        fn any_template_body_has_a_plain_text(html in "(<[a-z/ =\"]{0,8}>|&[a-z#0-9]{0,5};|[^<>&]{0,8}|[<>&]){0,40}") {
            let text = plain_text(&html);
            if !html.contains('&') {
                let tag_left = text.find('<').is_some_and(|open| text[open..].contains('>'));
                proptest::prop_assert!(!tag_left, "{html:?} gave {text:?}");
            }
        }

        #[test]
        fn placeholders_never_panic(subject in ".{0,40}", body in ".{0,80}", value in ".{0,20}") {
            let t = Template { subject, body };
            let _ = t.resolve(&[("{OTP}".into(), value.clone()), ("{RECORD:name}".into(), escape_html(&value))]);
        }
    }
}
