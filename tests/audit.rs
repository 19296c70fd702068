//! `pb-backups audit` held to account: against our own server (the real binary) it passes
//! everything; through a proxy that breaks one thing at a time it fails exactly the checks
//! that see that thing; against real PocketBase 0.40.6 it finds what the committed report
//! says; and bad input stops it with exit status 2 and nothing changed.
//!
//! The committed reports under `docs/conformance/` are compared with what the auditor
//! writes; `scripts/conformance-reports` (`PB_CONFORMANCE_WRITE=1`) writes them instead.
//! PocketBase's has lines whose result depends on timing (races with its own delays): they
//! are marked in the file, and another result for them is accepted, not pinned.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pb_backups_audit::{Config, Report, Verdict};
use serde_json::{json, Value};
use support::*;

fn config(base: &str, dir: &Path) -> Config {
    let mut config = Config::new(base, SUPERUSER, USER);
    config.data_dir = Some(dir.to_path_buf());
    config.allow_restore = true;
    config
}

/// A line of a report whose verdict depends on timing, not on the server: a race the
/// auditor runs against the server's own delays. The committed report shows its `usual`
/// verdict, marked as timing-dependent; a run may give one of `also` instead (with any
/// text), which the comparison accepts.
struct Timing {
    /// How the line starts: `| create | 400 | ` for a documented response (in every
    /// language), `| NAME | ` for a probe.
    line: &'static str,
    usual: &'static str,
    also: &'static [&'static str],
}

const MARK: &str = " (timing-dependent)";

/// PocketBase's timing-dependent lines: the documented 400s the auditor sends while a
/// create runs, and the probes that race PocketBase's one-second delay before a restore
/// marks it busy, or its restart.
const POCKETBASE_TIMING: &[Timing] = &[
    Timing { line: "| create | 400 | ", usual: "**fail**", also: &["skipped"] },
    Timing { line: "| restore | 400 | ", usual: "**fail**", also: &["skipped"] },
    Timing { line: "| delete | 400 | ", usual: "**fail**", also: &["skipped"] },
    Timing {
        line: "| during a running create: create, restore and delete of its key refused, list served (R13, R14) | ",
        usual: "**fail**",
        also: &["**fail**"],
    },
    Timing {
        line: "| a create sent right after the restore's 204 is refused, or runs after the restore (R13, R21) | ",
        usual: "**fail**",
        also: &["pass"],
    },
    Timing { line: "| delete and restore of one key at once: never both accepted (R20, R21) | ", usual: "**fail**", also: &["pass"] },
    Timing { line: "| no connection refused while the server restarts (R23) | ", usual: "**fail**", also: &["pass"] },
];

const POCKETBASE_TIMING_LEGEND: &str = "Results marked *(timing-dependent)* race PocketBase's own timing, and \
the test that compares this report accepts another result for them: the create, restore and delete 400s \
are sent while a create of a 64 MiB data dir runs, and are skipped in a run where PocketBase's create ends \
first (the probe on that create then lists fewer of them); a create or a delete sent right after a \
restore's 204 is refused in a run where it comes more than a second later, when PocketBase marks itself \
busy; PocketBase does not listen for a few milliseconds while it re-executes itself, which the auditor's \
polls may miss.";

/// The byte range of the result cell of `line`, one of `t`'s.
fn result_range(line: &str, t: &Timing) -> std::ops::Range<usize> {
    let mut start = t.line.len();
    if t.line.matches(" | ").count() == 2 {
        // A documented response: the language cell comes first.
        start += line[start..].find(" | ").expect("a language cell") + 3;
    }
    start..start + line[start..].find(" | ").expect("a result cell")
}

/// The timing entry a line is one of, with its result (unmarked).
fn timing_line<'t>(line: &str, timing: &'t [Timing]) -> Option<(&'t Timing, String)> {
    let t = timing.iter().find(|t| line.starts_with(t.line))?;
    Some((t, line[result_range(line, t)].trim_end_matches(MARK).to_string()))
}

/// `report` with the result of each of `timing`'s lines marked, and `legend` after it.
fn mark_timing(report: &str, timing: &[Timing], legend: &str) -> String {
    let mut out = String::new();
    for line in report.lines() {
        match timing.iter().find(|t| line.starts_with(t.line)) {
            Some(t) => {
                let at = result_range(line, t).end;
                out.push_str(&format!("{}{MARK}{}\n", &line[..at], &line[at..]));
            }
            None => out.push_str(&format!("{line}\n")),
        }
    }
    if !timing.is_empty() {
        out.push_str(&format!("\n{legend}\n"));
    }
    out
}

/// The lines where `now` is not the `committed` report (both marked), and notes on the
/// timing-dependent lines that came out another accepted way. The summary counts those,
/// so it is compared only when none did.
fn compare_reports(committed: &str, now: &str, timing: &[Timing]) -> (Vec<String>, Vec<String>) {
    let (mut differing, mut tolerated) = (Vec::new(), Vec::new());
    let (old, new): (Vec<&str>, Vec<&str>) = (committed.lines().collect(), now.lines().collect());
    if old.len() != new.len() {
        differing.push(format!("{} lines committed, {} now", old.len(), new.len()));
    }
    let mut summaries = Vec::new();
    for (c, n) in old.iter().zip(&new) {
        if c == n {
            continue;
        }
        if c.starts_with("**Summary:") && n.starts_with("**Summary:") {
            summaries.push(format!("committed: {c}\nnow:       {n}"));
            continue;
        }
        if let (Some((t, _)), Some((_, result))) = (timing_line(c, timing), timing_line(n, timing)) {
            let same_line = c[..result_range(c, t).start] == n[..result_range(n, t).start];
            if same_line && t.also.contains(&result.as_str()) {
                tolerated.push(format!("timing-dependent, {result} this run: {}", &n[..result_range(n, t).start]));
                continue;
            }
        }
        differing.push(format!("committed: {c}\nnow:       {n}"));
    }
    if tolerated.is_empty() {
        differing.extend(summaries);
    }
    (differing, tolerated)
}

/// The committed report at `docs/conformance/NAME` must be `text`, its `timing` lines
/// marked (or becomes it, when `PB_CONFORMANCE_WRITE` is set: then each of those must have
/// come out its usual way, so that the file never keeps a lucky run).
fn check_committed(name: &str, text: &str, timing: &[Timing], legend: &str) {
    let text = mark_timing(text, timing, legend);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/conformance").join(name);
    if std::env::var_os("PB_CONFORMANCE_WRITE").is_some() {
        for line in text.lines() {
            if let Some((t, result)) = timing_line(line, timing) {
                assert_eq!(result, t.usual, "not written: a timing-dependent line came out its other way this run; run again:\n{line}");
            }
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let (differing, tolerated) = compare_reports(&committed, &text, timing);
    for note in &tolerated {
        eprintln!("docs/conformance/{name}: {note}");
    }
    assert!(
        differing.is_empty(),
        "docs/conformance/{name} differs from what the auditor finds now (the server or the auditor changed; \
         scripts/conformance-reports writes it again):\n{}\n\nthe whole report now:\n{text}",
        differing.join("\n")
    );
}

/// The comparison itself: a timing-dependent line may come out another accepted way (and
/// the summary then differs), nothing else may differ.
#[test]
fn only_timing_dependent_lines_may_come_out_otherwise() {
    const TIMING: &[Timing] = &[
        Timing { line: "| create | 400 | ", usual: "**fail**", also: &["skipped"] },
        Timing { line: "| restarts | ", usual: "**fail**", also: &["pass"] },
    ];
    let report = |create_zh: &str, restarts: &str, other: &str, summary: &str| {
        let text = format!(
            "# R\n\n| operation | status | lang | result | sent | got | why | reproduce |\n|---|---|---|---|---|---|---|---|\n\
             | create | 400 | zh | {create_zh} | `POST` | `400` | a | `curl` |\n\
             | create | 400 | en | **fail** | `POST` | `400` | b | `curl` |\n\n| probe | result | why |\n|---|---|---|\n\
             | restarts | {restarts} | why |\n| other | {other} | why |\n\n**Summary: {summary}.**\n"
        );
        mark_timing(&text, TIMING, "Legend.")
    };
    let committed = report("**fail**", "**fail**", "pass", "1 pass, 3 fail, 0 skipped");
    assert!(committed.contains("| create | 400 | zh | **fail** (timing-dependent) | `POST` |"), "{committed}");
    assert!(committed.contains("| restarts | **fail** (timing-dependent) | why |") && committed.ends_with("\nLegend.\n"), "{committed}");
    assert_eq!(compare_reports(&committed, &committed, TIMING), (vec![], vec![]));
    // Accepted: the other ways, with other text, and the summary that counts them.
    let (differing, tolerated) = compare_reports(&committed, &report("skipped", "pass", "pass", "2 pass, 1 fail, 1 skipped"), TIMING);
    assert_eq!((differing.len(), tolerated.len()), (0, 2), "{differing:?}");
    // Not accepted: a line that is not timing-dependent, a result not among the others, a
    // summary that differs while the timing-dependent lines did not.
    for (now, what) in [
        (report("**fail**", "**fail**", "**fail**", "0 pass, 4 fail, 0 skipped"), "a probe that is not timing-dependent"),
        (report("pass", "**fail**", "pass", "2 pass, 2 fail, 0 skipped"), "a result not accepted"),
        (report("**fail**", "**fail**", "pass", "9 pass, 3 fail, 0 skipped"), "the summary alone"),
    ] {
        assert!(!compare_reports(&committed, &now, TIMING).0.is_empty(), "{what} passed");
    }
}

fn failed(report: &Report) -> (BTreeSet<String>, BTreeSet<String>) {
    let rows = report
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .map(|r| format!("{} {} {}", pb_backups_audit::report::operation_name(r.operation), r.status, r.lang))
        .collect();
    let probes = report.probes.iter().filter(|p| p.verdict == Verdict::Fail).map(|p| p.name.clone()).collect();
    (rows, probes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_passes_everything_in_both_languages() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let mut config = config(&server.base, &dir);
    config.name = Some("pb-backups".into());
    let report = pb_backups_audit::audit(&config).await.expect("the audit runs");
    let text = report.markdown();
    assert_eq!(failed(&report), Default::default(), "{text}");
    // 27 documented responses: the 21 whose bodies differ by language three times (no
    // Accept-Language, zh, en), the six that do not (204s, list 200, download 200) once.
    assert_eq!(report.rows.len(), 21 * 3 + 6, "{text}");
    assert!(report.rows.iter().all(|r| r.verdict == Verdict::Pass), "{text}");
    let skipped: Vec<&str> = report.probes.iter().filter(|p| p.verdict == Verdict::Skipped).map(|p| p.name.as_str()).collect();
    // With --data-dir nothing is skipped: even the expired tokens are made from its key.
    assert_eq!(skipped, Vec::<&str>::new(), "{text}");
    check_committed("pb-backups.md", &text, &[], "");
    // It left the server as it found it: no backups, no files of its own.
    let client = reqwest::Client::new();
    let su = login(&client, &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    let r = client.get(format!("{}/api/backups", server.base)).header("Authorization", &su).send().await.unwrap();
    assert_eq!(status_json(r).await, (200, json!([])));
    let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with("audit_")), "{names:?}");
}

/// What the proxy breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mutation {
    None,
    /// Restore of a missing backup answers 400 instead of 404 (as upstream does).
    Status,
    /// The list's 401 says something else.
    Message,
    /// The upload 400 loses its `data`.
    Field,
    /// Downloads come without Content-Disposition.
    Header,
    /// A restore of an existing backup answers 204 and does nothing.
    Restore,
}

impl Mutation {
    fn from_u8(v: u8) -> Mutation {
        [Mutation::None, Mutation::Status, Mutation::Message, Mutation::Field, Mutation::Header, Mutation::Restore][v as usize]
    }
}

/// A proxy in front of `upstream` that applies the current mutation.
async fn mutating_proxy(upstream: String, mutation: Arc<AtomicU8>) -> String {
    use poem::{Body, Request, Response};
    let client = reqwest::Client::new();
    let handler = poem::endpoint::make(move |req: Request| {
        let (client, upstream, mutation) = (client.clone(), upstream.clone(), mutation.clone());
        async move {
            let mutation = Mutation::from_u8(mutation.load(Ordering::SeqCst));
            let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in req.headers() {
                if name != "host" {
                    headers.insert(reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(), reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap());
                }
            }
            let body = req.into_body().into_bytes().await.unwrap();
            if mutation == Mutation::Restore && method == reqwest::Method::POST && path.ends_with("/restore") {
                let key = path.trim_start_matches("/api/backups/").trim_end_matches("/restore").to_string();
                let list = client.get(format!("{upstream}/api/backups")).headers(headers.clone()).send().await.unwrap();
                let exists = list.status() == 200 && list.json::<Value>().await.unwrap().as_array().unwrap().iter().any(|b| b["key"] == key.as_str());
                if exists {
                    return Response::builder().status(poem::http::StatusCode::NO_CONTENT).finish();
                }
            }
            let r = client.request(method.clone(), format!("{upstream}{path}")).headers(headers).body(body.to_vec()).send().await.unwrap();
            let mut status = r.status().as_u16();
            let mut out_headers = r.headers().clone();
            let mut bytes = r.bytes().await.unwrap().to_vec();
            let json_body = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).ok();
            match mutation {
                Mutation::Status if path.ends_with("/restore") && status == 404 => status = 400,
                Mutation::Message if method == reqwest::Method::GET && path == "/api/backups" && status == 401 => {
                    let mut v = json_body(&bytes).unwrap();
                    v["message"] = json!("Unauthorized.");
                    bytes = serde_json::to_vec(&v).unwrap();
                }
                Mutation::Field if path == "/api/backups/upload" && status == 400 => {
                    let mut v = json_body(&bytes).unwrap();
                    v.as_object_mut().unwrap().remove("data");
                    bytes = serde_json::to_vec(&v).unwrap();
                }
                Mutation::Header if out_headers.get("content-type").is_some_and(|t| t == "application/zip") => {
                    out_headers.remove("content-disposition");
                }
                _ => {}
            }
            let mut response = Response::builder().status(poem::http::StatusCode::from_u16(status).unwrap());
            for (name, value) in &out_headers {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    response = response.header(name.as_str(), value.as_bytes());
                }
            }
            response.body(Body::from(bytes))
        }
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let acceptor = poem::listener::TcpAcceptor::from_std(listener).unwrap();
    tokio::spawn(async move { poem::Server::new_with_acceptor(acceptor).run(handler).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_is_caught_and_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let mutation = Arc::new(AtomicU8::new(Mutation::None as u8));
    let proxy = mutating_proxy(server.base.clone(), mutation.clone()).await;
    let tongues = ["zh (default)", "zh", "en"];
    let rows = |what: &str| tongues.iter().map(|t| format!("{what} {t}")).collect::<BTreeSet<String>>();
    let probes = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<String>>();
    // The list's bad-token probes compare with the same 401 body the Message mutation changes.
    let list_401_probes = probes(&[
        "bad token, auth: `alg: none`: list refused with the documented 401 (R5)",
        "bad token, auth: a file token: list refused with the documented 401 (R5)",
        "bad token, auth: a foreign signature: list refused with the documented 401 (R5)",
        "bad token, auth: not a token: list refused with the documented 401 (R5)",
        "bad token, expired: list refused with the documented 401 (R5)",
    ]);
    // (mutation, the rows that must fail, what their why must say, exactly the probes that fail)
    let cases: [(Mutation, BTreeSet<String>, &str, BTreeSet<String>); 5] = [
        (Mutation::Status, rows("restore 404"), "status 400 where the spec documents 404", BTreeSet::new()),
        (Mutation::Message, rows("list 401"), "`message` is \"Unauthorized.\"", list_401_probes),
        (Mutation::Field, rows("upload 400"), "field `data` is missing", BTreeSet::new()),
        (Mutation::Header, ["download 200 any".to_string()].into(), "no Content-Disposition header", BTreeSet::new()),
        (
            Mutation::Restore,
            BTreeSet::new(),
            "",
            probes(&[
                "a create sent right after the restore's 204 is refused, or runs after the restore (R13, R21)",
                "restore takes effect (R23)",
                "delete and restore of one key at once: never both accepted (R20, R21)",
            ]),
        ),
    ];
    for (m, want_rows, why, want_probes) in cases {
        mutation.store(m as u8, Ordering::SeqCst);
        let mut config = config(&proxy, &dir);
        config.allow_restore = m == Mutation::Restore;
        config.restore_wait = Duration::from_secs(5);
        let report = pb_backups_audit::audit(&config).await.expect("the audit runs");
        let (got_rows, got_probes) = failed(&report);
        let text = report.markdown();
        assert_eq!(got_rows, want_rows, "{m:?}:\n{text}");
        for row in report.rows.iter().filter(|r| r.verdict == Verdict::Fail) {
            assert!(row.why.contains(why), "{m:?}: {row:?}");
            assert!(row.repro.as_deref().is_some_and(|c| c.starts_with("curl ") || c.starts_with("# the file")), "{row:?}");
        }
        assert_eq!(got_probes, want_probes, "{m:?}: the failing probes\n{text}");
        if m == Mutation::Restore {
            let effect = report.probes.iter().find(|p| p.name == "restore takes effect (R23)").unwrap();
            assert!(effect.why.contains("the data was not restored"), "{effect:?}");
        }
    }
}

/// Runs the binary's `audit` with `args`: (exit status, stderr).
fn audit_command(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pb-backups")).arg("audit").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_stops_with_status_2_and_changes_nothing() {
    let help = Command::new(env!("CARGO_BIN_EXE_pb-backups")).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("audit"), "pb-backups --help lists audit");

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let su = format!("{}:{}", SUPERUSER.0, SUPERUSER.1);
    let user = format!("{}:{}", USER.0, USER.1);
    let other = root.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other = other.to_str().unwrap().to_string();
    // A data dir like the server's, but another one.
    let twin = root.path().join("twin");
    seed_accounts(&twin);
    let twin = twin.to_str().unwrap().to_string();
    // A port nothing listens on: bound, then released.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let base = server.base.as_str();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![&closed, "--superuser", &su, "--user", &user], "unreachable"),
        (vec!["not a url", "--superuser", &su, "--user", &user], "not an http"),
        (vec![base, "--superuser", "admin@example.com:wrong-password", "--user", &user], "superuser login was refused"),
        (vec![base, "--superuser", &su, "--user", "user@example.com:wrong"], "user login was refused"),
        (vec![base, "--superuser", &su, "--user", &su], "--user is a superuser"),
        (vec![base, "--superuser", &su, "--user", &user, "--data-dir", &other], "not this server's data dir"),
        (vec![base, "--superuser", &su, "--user", &user, "--data-dir", &twin], "not this server's data dir"),
        (vec![base, "--superuser", "no-colon", "--user", &user], "EMAIL:PASSWORD"),
    ];
    for (args, says) in cases {
        let (code, stderr) = audit_command(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} should say {says:?}: {stderr}");
    }
    // Nothing changed: no backups, and the other dir is still empty.
    let client = reqwest::Client::new();
    let token = login(&client, base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    let r = client.get(format!("{base}/api/backups")).header("Authorization", &token).send().await.unwrap();
    assert_eq!(status_json(r).await, (200, json!([])));
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0);
    assert!(!Path::new(&twin).join("backups").exists() || std::fs::read_dir(Path::new(&twin).join("backups")).unwrap().count() == 0);

    // Runs that work: JSON on stdout with model sequences, JUnit into a file; exit status 0.
    let out = Command::new(env!("CARGO_BIN_EXE_pb-backups"))
        .args(["audit", base, "--superuser", &su, "--user", &user, "--lang", "en", "--format", "json", "--sequences", "3"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["summary"]["fail"], 0);
    assert!(report["rows"].as_array().unwrap().iter().all(|r| r["lang"] == "en" || r["lang"] == "any"));
    assert!(report["started"].as_str().is_some_and(|s| !s.is_empty()));
    let probes = report["probes"].as_array().unwrap();
    let sequences: Vec<&Value> = probes.iter().filter(|p| p["name"].as_str().unwrap().starts_with("model sequence")).collect();
    assert_eq!(sequences.len(), 3, "{report:#}");
    assert!(sequences.iter().all(|p| p["result"] == "pass"), "{report:#}");
    // Without --data-dir and --allow-restore those rows are skipped, and say why.
    for row in report["rows"].as_array().unwrap().iter().filter(|r| r["result"] == "skipped") {
        let why = row["why"].as_str().unwrap();
        assert!(why.contains("--data-dir") || why.contains("--allow-restore"), "{row}");
    }
    let junit = root.path().join("report.xml");
    let out = Command::new(env!("CARGO_BIN_EXE_pb-backups"))
        .args(["audit", base, "--superuser", &su, "--user", &user, "--lang", "zh", "--format", "junit", "--out"])
        .arg(&junit)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "the report goes to the file");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml") && xml.contains("<testsuites") && xml.contains("failures=\"0\""), "{xml}");
    assert!(xml.contains("<testcase classname=\"documented responses: ") && xml.contains("<skipped message="), "{xml}");
}

/// A proxy in front of `upstream` that holds every request (never answers it) while `dir`'s
/// backups storage is broken (`backups` a regular file), telling `held` each time.
async fn holding_proxy(upstream: String, dir: PathBuf, held: Arc<tokio::sync::Notify>) -> String {
    use poem::{Body, Request, Response};
    let client = reqwest::Client::new();
    let handler = poem::endpoint::make(move |req: Request| {
        let (client, upstream, dir, held) = (client.clone(), upstream.clone(), dir.clone(), held.clone());
        async move {
            if dir.join("backups").is_file() {
                held.notify_one();
                std::future::pending::<()>().await;
            }
            let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in req.headers() {
                if name != "host" {
                    headers.insert(reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(), reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap());
                }
            }
            let body = req.into_body().into_bytes().await.unwrap();
            let r = client.request(method, format!("{upstream}{path}")).headers(headers).body(body.to_vec()).send().await.unwrap();
            let mut response = Response::builder().status(poem::http::StatusCode::from_u16(r.status().as_u16()).unwrap());
            for (name, value) in r.headers() {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    response = response.header(name.as_str(), value.as_bytes());
                }
            }
            response.body(Body::from(r.bytes().await.unwrap().to_vec()))
        }
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let acceptor = poem::listener::TcpAcceptor::from_std(listener).unwrap();
    tokio::spawn(async move { poem::Server::new_with_acceptor(acceptor).run(handler).await });
    format!("http://{addr}")
}

/// Stopped by SIGINT or SIGTERM while it holds the server's backups storage broken (moved
/// aside, a file in its place), `audit --data-dir` puts it back, removes its files, says so
/// and exits with 128 + the signal's number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_audit_mends_the_data_dir_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pb_data");
    seed_accounts(&dir);
    let server = BinaryServer::start(&dir);
    let client = reqwest::Client::new();
    let token = login(&client, &server.base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
    let r = client.post(format!("{}/api/backups", server.base)).header("Authorization", &token).json(&json!({"name": "kept.zip"})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let kept = std::fs::read(dir.join("backups/kept.zip")).unwrap();
    let top_level = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let before = top_level();

    let (su, user) = (format!("{}:{}", SUPERUSER.0, SUPERUSER.1), format!("{}:{}", USER.0, USER.1));
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let held = Arc::new(tokio::sync::Notify::new());
        let proxy = holding_proxy(server.base.clone(), dir.clone(), held.clone()).await;
        let mut audit = Command::new(env!("CARGO_BIN_EXE_pb-backups"))
            .args(["audit", &proxy, "--superuser", &su, "--user", &user, "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(300), held.notified()).await.expect("the audit broke the backups storage");
        assert!(dir.join("backups").is_file(), "signal {signal}: the storage is broken while held");
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
        unsafe { libc::kill(audit.id() as libc::pid_t, signal) };
        let out = tokio::task::spawn_blocking(move || {
            let mut stderr = String::new();
            std::io::Read::read_to_string(audit.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            (audit.wait().unwrap(), stderr)
        });
        let (status, stderr) = tokio::time::timeout(Duration::from_secs(60), out).await.expect("the audit ends").unwrap();
        assert_eq!(status.code(), Some(code), "signal {signal}: {status:?}, {stderr}");
        assert!(stderr.contains("the data dir is mended") && stderr.contains("backups/ put back"), "signal {signal}: {stderr}");
        assert!(dir.join("backups").is_dir(), "signal {signal}: backups/ is back");
        assert_eq!(std::fs::read(dir.join("backups/kept.zip")).unwrap(), kept, "signal {signal}: with its backups");
        assert_eq!(top_level(), before, "signal {signal}: nothing of the audit's left in the data dir");

        // What it made on the server stays (it says so): remove it for the next round.
        let r = client.get(format!("{}/api/backups", server.base)).header("Authorization", &token).send().await.unwrap();
        let (_, listed) = status_json(r).await;
        for key in listed.as_array().unwrap().iter().filter_map(|b| b["key"].as_str()).filter(|k| k.starts_with("audit_")) {
            let r = client.delete(format!("{}/api/backups/{key}", server.base)).header("Authorization", &token).send().await.unwrap();
            assert_eq!(r.status(), 204, "delete {key}");
        }
    }
}

/// Real PocketBase serving a fresh data dir, with a superuser and a regular user.
struct PocketBase {
    base: String,
    dir: PathBuf,
    child: Child,
}

impl PocketBase {
    async fn start(root: &Path, version: &str) -> PocketBase {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pocketbase-bin");
        let out = Command::new(script).arg(version).output().expect("run scripts/pocketbase-bin");
        assert!(out.status.success(), "PocketBase {version} is needed: {}", String::from_utf8_lossy(&out.stderr));
        let bin = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let dir = root.join("pb_data");
        let status = Command::new(&bin).args(["superuser", "upsert", SUPERUSER.0, SUPERUSER.1, "--dir"]).arg(&dir).output().unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(root.join("pocketbase.log")).unwrap();
        let child = Command::new(&bin)
            .args(["serve", "--http", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        eventually(Duration::from_secs(30), "PocketBase serving", || async {
            let r = client.get(format!("{base}/api/health")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        let su = login(&client, &base, "_superusers", SUPERUSER.0, SUPERUSER.1).await;
        let r = client
            .post(format!("{base}/api/collections/users/records"))
            .header("Authorization", &su)
            .json(&json!({"email": USER.0, "password": USER.1, "passwordConfirm": USER.1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the regular user is created");
        PocketBase { base, dir, child }
    }
}

impl Drop for PocketBase {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketbase_0_40_6_is_as_the_committed_report_says() {
    let root = tempfile::tempdir().unwrap();
    let pb = PocketBase::start(root.path(), "0.40.6").await;
    let mut config = config(&pb.base, &pb.dir);
    config.name = Some("PocketBase 0.40.6".into());
    // PocketBase serves again within seconds after a restore, or never (a lost restore).
    config.restore_wait = Duration::from_secs(20);
    let report = pb_backups_audit::audit(&config).await.expect("the audit runs");
    check_committed("pocketbase-0.40.6.md", &report.markdown(), POCKETBASE_TIMING, POCKETBASE_TIMING_LEGEND);
}
