//! `--sequences N`: random requests driven by the spec's reference model, each response
//! compared with what the model says it must be. Only requests that never restore or hold
//! anything are drawn, on four keys of the auditor's own.

use std::collections::BTreeSet;

use pb_backups_spec::{step, Caller, Lang, Op, State};
use serde_json::json;

use crate::http::{Cred, Req, Target};
use crate::judge;

const STEPS: usize = 20;

/// The `i`-th key sequences play with.
pub fn key(i: u32) -> String {
    format!("audit_s_{i}.zip")
}

/// A small generator of random numbers; the seed is shown so a failure can be replayed.
struct Draw(u64);

impl Draw {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn draw_op(d: &mut Draw) -> Op {
    let caller = match d.next(10) {
        0 => Caller::Anonymous,
        1 => Caller::User,
        _ => Caller::Superuser,
    };
    let key = key(d.next(4) as u32);
    match d.next(6) {
        0 => Op::List { caller },
        1 => Op::Create { caller, name: Some(key) },
        2 => Op::Upload { caller, key, valid_zip: d.next(4) != 0 },
        3 | 4 => Op::Delete { caller, key },
        _ => Op::Download { caller, key },
    }
}

fn request(op: &Op, zip: &[u8]) -> Req {
    let (req, caller) = match op {
        Op::List { caller } => (Req::get("/api/backups"), caller),
        Op::Create { caller, name } => (Req::post("/api/backups").json(json!({"name": name})), caller),
        Op::Upload { caller, key, valid_zip } => {
            let bytes = if *valid_zip { zip.to_vec() } else { b"not a zip".to_vec() };
            (Req::post("/api/backups/upload").file(key, bytes, "a zip or not"), caller)
        }
        Op::Delete { caller, key } => (Req::delete(format!("/api/backups/{key}")), caller),
        Op::Download { caller, key } => {
            let token = match caller {
                Caller::Anonymous => return Req::get(format!("/api/backups/{key}")),
                Caller::User => "$USER_FILE_TOKEN",
                Caller::Superuser => "$SUPERUSER_FILE_TOKEN",
            };
            return Req::get(format!("/api/backups/{key}?token={token}"));
        }
        _ => unreachable!("only requests that finish within their step are drawn"),
    };
    match caller {
        Caller::Anonymous => req,
        Caller::User => req.auth(Cred::User),
        Caller::Superuser => req.auth(Cred::Su),
    }
}

/// Runs `n` sequences; returns a probe name and its problems for each.
pub async fn run(t: &Target, n: u32) -> Vec<(String, Vec<String>)> {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    // Any small zip the server takes: one it made itself.
    let zip = {
        let made = t.send(&Req::post("/api/backups").auth(Cred::Su).json(json!({"name": key(0)}))).await;
        let got = t.send(&Req::get(format!("/api/backups/{}?token=$SUPERUSER_FILE_TOKEN", key(0)))).await;
        let _ = t.send(&Req::delete(format!("/api/backups/{}", key(0))).auth(Cred::Su)).await;
        match (made, got) {
            (Ok(_), Ok(g)) if g.status == 200 => g.body,
            _ => return vec![("model sequences".into(), vec!["could not make a zip to upload".into()])],
        }
    };
    let mut out = Vec::new();
    for i in 0..n {
        let mut d = Draw(seed.wrapping_add(u64::from(i) * 0x9E37_79B9));
        let name = format!("model sequence {} of {n} (seed {})", i + 1, d.0);
        let mut state = State::default();
        let mut problems = Vec::new();
        for _ in 0..STEPS {
            let op = draw_op(&mut d);
            let (next, outcome) = step(&state, &op);
            let req = request(&op, &zip);
            let got = t.send(&req).await;
            let shown = req.shown();
            match &got {
                Err(e) => problems.push(format!("{shown}: {}", crate::http::describe_error(e))),
                Ok(g) if g.status != outcome.status => {
                    problems.push(format!("{shown}: {} where the model says {}", t.shown(&got), outcome.status))
                }
                Ok(g) => {
                    if let Some(doc) = outcome.documented(&op).filter(|d| d.status >= 400) {
                        let why = judge::differences(doc, Lang::Zh, g, None);
                        if !why.is_empty() {
                            problems.push(format!("{shown}: {}", why.join(", ")));
                        }
                    }
                    if let Some(listed) = &outcome.listed {
                        let keys: BTreeSet<String> = g
                            .json()
                            .and_then(|b| b.as_array().cloned())
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|i| i["key"].as_str().map(String::from))
                            .filter(|k| k.starts_with("audit_s_"))
                            .collect();
                        if &keys != listed {
                            problems.push(format!("{shown}: lists {keys:?} where the model has {listed:?}"));
                        }
                    }
                }
            }
            if !problems.is_empty() {
                break;
            }
            state = next;
        }
        for key in (0..4).map(key) {
            let _ = t.send(&Req::delete(format!("/api/backups/{key}")).auth(Cred::Su)).await;
        }
        out.push((t.redact(&name), problems.iter().map(|p| t.redact(p)).collect()));
    }
    out
}
