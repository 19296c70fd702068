//! The findings and the three ways to write them: Markdown for people, JSON for tools,
//! JUnit XML for CI systems. Nothing volatile (times, sizes, ports, tokens) goes into the
//! Markdown, so two runs against the same server give the same text.

use pb_backups_spec::Operation;
use serde_json::{json, Value};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Skipped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One documented response in one language.
#[derive(Clone, Debug)]
pub struct Row {
    pub operation: Operation,
    pub status: u16,
    /// `zh (default)` (no Accept-Language), `zh`, `en`, or `any` for a body the same in both.
    pub lang: &'static str,
    pub verdict: Verdict,
    pub sent: String,
    pub got_status: Option<u16>,
    pub got: String,
    pub why: String,
    /// A command that reproduces a failure.
    pub repro: Option<String>,
}

/// One probe beyond the documented responses (exclusivity, hostile input).
#[derive(Clone, Debug)]
pub struct Probe {
    pub name: String,
    pub verdict: Verdict,
    pub why: String,
}

/// Everything an audit found.
#[derive(Clone, Debug)]
pub struct Report {
    /// How the report names the server.
    pub target: String,
    /// When the audit started (RFC 3339; JSON and JUnit only).
    pub started: String,
    /// The options that shaped the audit, as given.
    pub options: String,
    pub rows: Vec<Row>,
    pub probes: Vec<Probe>,
}

/// How many checks passed, failed and were skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub skipped: usize,
}

pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::List => "list",
        Operation::Create => "create",
        Operation::Upload => "upload",
        Operation::Delete => "delete",
        Operation::Restore => "restore",
        Operation::Download => "download",
    }
}

impl Report {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for v in self.rows.iter().map(|r| r.verdict).chain(self.probes.iter().map(|p| p.verdict)) {
            match v {
                Verdict::Pass => s.pass += 1,
                Verdict::Fail => s.fail += 1,
                Verdict::Skipped => s.skipped += 1,
            }
        }
        s
    }

    pub fn markdown(&self) -> String {
        let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        let code = |text: &str| if text.is_empty() { String::new() } else { format!("`{}`", cell(text).replace('`', "'")) };
        let mut out = format!("# Backups API conformance: {}\n\n", self.target);
        out.push_str(&format!(
            "Audited with `pb-backups audit {}` against the spec's 27 documented responses \
             (`spec/src/catalog.rs`) and our reading of it (`spec/src/rules.rs`). In requests, \
             `$URL` is the server and `$SUPERUSER_TOKEN`, `$USER_TOKEN`, `$SUPERUSER_FILE_TOKEN`, \
             `$USER_FILE_TOKEN` are tokens got by password login and `POST /api/files/token`. \
             Language `zh (default)` is a request without `Accept-Language`; `any` marks a \
             response whose documented body is the same in every language, checked once.\n\n",
            self.options
        ));
        out.push_str("## Documented responses\n\n");
        out.push_str("| operation | status | lang | result | sent | got | why | reproduce |\n|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let repro = r.repro.as_deref().map(|c| code(&c.replace('\n', "; "))).unwrap_or_default();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                operation_name(r.operation),
                r.status,
                r.lang,
                mark(r.verdict),
                code(&r.sent),
                code(&r.got),
                cell(&r.why),
                repro
            ));
        }
        out.push_str("\n## Probes\n\n| probe | result | why |\n|---|---|---|\n");
        for p in &self.probes {
            out.push_str(&format!("| {} | {} | {} |\n", cell(&p.name), mark(p.verdict), cell(&p.why)));
        }
        let s = self.summary();
        out.push_str(&format!("\n**Summary: {} pass, {} fail, {} skipped.**\n", s.pass, s.fail, s.skipped));
        out
    }

    pub fn json(&self) -> Value {
        let s = self.summary();
        json!({
            "target": self.target,
            "started": self.started,
            "rows": self.rows.iter().map(|r| json!({
                "operation": operation_name(r.operation),
                "status": r.status,
                "lang": r.lang,
                "result": r.verdict.as_str(),
                "got_status": r.got_status,
                "why": r.why,
                "repro": r.repro,
            })).collect::<Vec<_>>(),
            "probes": self.probes.iter().map(|p| json!({
                "name": p.name,
                "result": p.verdict.as_str(),
                "why": p.why,
            })).collect::<Vec<_>>(),
            "summary": {"pass": s.pass, "fail": s.fail, "skipped": s.skipped},
        })
    }

    pub fn junit(&self) -> String {
        let s = self.summary();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuites name=\"pb-backups audit\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
            s.pass + s.fail + s.skipped,
            s.fail,
            s.skipped
        ));
        let suite = |name: &str, cases: Vec<(String, Verdict, String)>| {
            let failures = cases.iter().filter(|c| c.1 == Verdict::Fail).count();
            let skipped = cases.iter().filter(|c| c.1 == Verdict::Skipped).count();
            let mut out = format!(
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" timestamp=\"{}\">\n",
                xml(name),
                cases.len(),
                xml(&self.started)
            );
            for (case, verdict, why) in cases {
                out.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\"", xml(name), xml(&case)));
                match verdict {
                    Verdict::Pass => out.push_str("/>\n"),
                    Verdict::Fail => out.push_str(&format!(">\n      <failure message=\"{}\"/>\n    </testcase>\n", xml(&why))),
                    Verdict::Skipped => out.push_str(&format!(">\n      <skipped message=\"{}\"/>\n    </testcase>\n", xml(&why))),
                }
            }
            out.push_str("  </testsuite>\n");
            out
        };
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let why = match &r.repro {
                    Some(repro) => format!("{}; got {}; reproduce: {repro}", r.why, r.got),
                    None => r.why.clone(),
                };
                (format!("{} {} {}", operation_name(r.operation), r.status, r.lang), r.verdict, why)
            })
            .collect();
        out.push_str(&suite(&format!("documented responses: {}", self.target), rows));
        let probes = self.probes.iter().map(|p| (p.name.clone(), p.verdict, p.why.clone())).collect();
        out.push_str(&suite(&format!("probes: {}", self.target), probes));
        out.push_str("</testsuites>\n");
        out
    }
}

fn mark(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "**fail**",
        Verdict::Skipped => "skipped",
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
