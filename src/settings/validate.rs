//! The settings' validation, with PocketBase's codes: every refused field is named, in the
//! nesting PocketBase gives it in an error's `data`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{cron, BackupsSettings, SmtpSettings};
use crate::mail;

/// One refused field, PocketBase's validation code first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldProblem {
    /// `validation_invalid_cron`.
    InvalidCron(cron::CronError),
    /// `validation_required`: `cronMaxKeep` is needed while a cron is set; a `superuserIPs`
    /// entry is blank; `smtp.host`/`port` while SMTP is on; the sender always.
    Required,
    /// `validation_min_greater_equal_than_required`.
    BelowOne,
    /// A `superuserIPs` entry that is neither an address nor a CIDR range.
    InvalidIpOrSubnet,
    /// `validation_min_greater_equal_than_required` (a negative port).
    BelowZero,
    /// `validation_max_less_equal_than_required` (a port past 65535; PocketBase stores it).
    AbovePortRange,
    /// `validation_is_host`: not an IP address or DNS name.
    NotAHost,
    /// `validation_in_invalid`: `smtp.authMethod` other than `PLAIN`, `LOGIN` or empty.
    NotAllowed,
    /// `validation_is_email`.
    NotAnEmail,
    /// `validation_is_url`: an S3 endpoint that is not a URL.
    NotAUrl,
}

impl FieldProblem {
    pub fn code(&self) -> &'static str {
        match self {
            FieldProblem::InvalidCron(_) => "validation_invalid_cron",
            FieldProblem::Required => "validation_required",
            FieldProblem::BelowOne | FieldProblem::BelowZero => "validation_min_greater_equal_than_required",
            FieldProblem::AbovePortRange => "validation_max_less_equal_than_required",
            FieldProblem::NotAHost => "validation_is_host",
            FieldProblem::NotAllowed => "validation_in_invalid",
            FieldProblem::NotAnEmail => "validation_is_email",
            FieldProblem::NotAUrl => "validation_is_url",
            // PocketBase's code, misspelling included: clients match on it.
            FieldProblem::InvalidIpOrSubnet => "validation_invlaid_ip_or_subnet",
        }
    }
}

/// A refused field: its section (`backups`, `superuserIPs`) and its name there (for a list,
/// the entry's index; `s3.bucket` for a field of `backups.s3`: each `.` one level deeper),
/// as PocketBase nests them in the error's `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidField {
    pub section: &'static str,
    pub field: String,
    pub problem: FieldProblem,
}

/// Why a change was refused: every refused field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invalid {
    pub fields: Vec<InvalidField>,
}

impl Invalid {
    pub(super) fn push(&mut self, section: &'static str, field: impl Into<String>, problem: FieldProblem) {
        self.fields.push(InvalidField { section, field: field.into(), problem });
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> =
            self.fields.iter().map(|i| format!("{}.{}: {}", i.section, i.field, i.problem.code())).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Checks the section as PocketBase does: a cron that parses, and with it a `cronMaxKeep`
/// of at least 1 (0 counts as missing). Without a cron only a negative keep is refused.
pub fn validate(b: &BackupsSettings) -> Result<(), Invalid> {
    let mut invalid = Invalid::default();
    validate_backups(b, &mut invalid);
    if invalid.fields.is_empty() {
        Ok(())
    } else {
        Err(invalid)
    }
}

pub(super) fn validate_backups(b: &BackupsSettings, invalid: &mut Invalid) {
    if !b.cron.is_empty() {
        if let Err(e) = cron::parse_cron(&b.cron) {
            invalid.push("backups", "cron", FieldProblem::InvalidCron(e));
        }
        if b.cron_max_keep == 0 {
            invalid.push("backups", "cronMaxKeep", FieldProblem::Required);
        }
    }
    if b.cron_max_keep < 0 {
        invalid.push("backups", "cronMaxKeep", FieldProblem::BelowOne);
    }
}

/// Each entry must be an address or a CIDR range, written exactly (no blanks around it).
pub(super) fn validate_superuser_ips(ips: &[String], invalid: &mut Invalid) {
    for (i, ip) in ips.iter().enumerate() {
        if ip.is_empty() {
            invalid.push("superuserIPs", i.to_string(), FieldProblem::Required);
        } else if parse_ip_or_net(ip).is_none() {
            invalid.push("superuserIPs", i.to_string(), FieldProblem::InvalidIpOrSubnet);
        }
    }
}

/// An address (as its single-address range) or a CIDR range.
pub(super) fn parse_ip_or_net(s: &str) -> Option<IpNet> {
    match s.parse::<IpNet>() {
        Ok(net) => Some(net),
        Err(_) => s.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

/// The `smtp` section as PocketBase checks it: host and port needed while it is on; a host,
/// a local name and an auth method, when given, well formed whether it is on or not.
pub(super) fn validate_smtp(smtp: &SmtpSettings, invalid: &mut Invalid) {
    let mut refuse = |field: &'static str, problem| invalid.push("smtp", field, problem);
    if smtp.enabled && smtp.host.is_empty() {
        refuse("host", FieldProblem::Required);
    } else if !smtp.host.is_empty() && !is_host(&smtp.host) {
        refuse("host", FieldProblem::NotAHost);
    }
    if smtp.port < 0 {
        refuse("port", FieldProblem::BelowZero);
    } else if smtp.port > i64::from(u16::MAX) {
        refuse("port", FieldProblem::AbovePortRange);
    } else if smtp.enabled && smtp.port == 0 {
        refuse("port", FieldProblem::Required);
    }
    if !["", "PLAIN", "LOGIN"].contains(&smtp.auth_method.as_str()) {
        refuse("authMethod", FieldProblem::NotAllowed);
    }
    if !smtp.local_name.is_empty() && !is_host(&smtp.local_name) {
        refuse("localName", FieldProblem::NotAHost);
    }
}

/// The sender, always required, as PocketBase checks it.
pub(super) fn validate_sender(name: &str, address: &str, invalid: &mut Invalid) {
    if name.trim().is_empty() {
        invalid.push("meta", "senderName", FieldProblem::Required);
    }
    if address.is_empty() {
        invalid.push("meta", "senderAddress", FieldProblem::Required);
    } else if !mail::is_address(address) {
        invalid.push("meta", "senderAddress", FieldProblem::NotAnEmail);
    }
}

/// An IP address (IPv6 without brackets) or a DNS name: labels of letters, digits, `_` and
/// `-` (not first), at most 63 bytes each and 253 in all, an optional final dot.
pub fn is_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

