//! The probes beyond single responses: exclusivity (busy refusals, concurrent creates),
//! tokens (bad, expired) and path traversal.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pb_backups_spec::Operation;
use serde_json::json;

use super::{ABSENT, Answer, Auditor, HELD, NEWER, REFUSED, Tongue, keys_of};
use crate::datadir::OUTSIDE;
use crate::http::{Cred, Req};
use crate::report::{operation_name, Verdict};

impl Auditor {
    /// Keeps creates slow enough to be seen running, when the data dir is at hand.
    pub(super) fn slow_creates(&self) -> bool {
        self.dir.as_ref().is_some_and(|d| d.write_filler(64).is_ok())
    }

    /// create 400, delete 400, restore 400: each sent while a create runs.
    pub(super) async fn busy(&mut self) {
        let slow = self.slow_creates();
        self.made.insert(HELD.into());
        let tongues = self.tongues.clone();
        let first = tongues[0];
        let delete = |tongue: Tongue| Req::delete(format!("/api/backups/{HELD}")).auth(Cred::Su).lang(tongue.header());
        // What this server answers for a key it does not hold: the spec says 404, PocketBase 400.
        let missing = self.send(&delete(first)).await.ok().map(|g| (g.status, g.body));
        let t = self.t.clone();
        let started = Instant::now();
        let holder = tokio::spawn(async move {
            t.send(&Req::post("/api/backups").auth(Cred::Su).json(json!({"name": HELD}))).await
        });
        // Until the create is seen running, a delete of its key answers as for a missing key:
        // ask until it does not.
        let mut polls = 0;
        let caught = loop {
            if holder.is_finished() {
                break None;
            }
            let req = delete(first);
            let got = self.send(&req).await;
            polls += 1;
            match &got {
                Ok(g) if missing.as_ref() == Some(&(g.status, g.body.clone())) => continue,
                Ok(g) if g.status == 204 => break None,
                _ if holder.is_finished() => break None,
                _ => break Some((req, got)),
            }
        };
        // Without --data-dir the creates cannot be slowed down: the skips say how to.
        let hint = if slow { "" } else { "; with --data-dir the auditor makes creates slower" };
        let finished_meanwhile = format!("the create finished before this request was answered{hint}");
        let not_caught = match slow {
            true => finished_meanwhile.clone(),
            false => format!("could not catch a create running (it finished too fast){hint}"),
        };
        let mut window_problems = Vec::new();
        match caught {
            None => {
                let held_took = started.elapsed();
                for tongue in &tongues {
                    if slow && polls > 3 && held_took > Duration::from_millis(300) {
                        let req = delete(*tongue);
                        let why = vec![format!("DELETE of the key being created was answered as for a missing key all through its create ({polls} requests)")];
                        let got: Answer = self.send(&req).await;
                        self.row(Operation::Delete, 400, tongue.label(), &req, &got, why);
                    } else {
                        self.skip_row(Operation::Delete, 400, tongue.label(), &not_caught);
                    }
                    self.skip_row(Operation::Create, 400, tongue.label(), &not_caught);
                    self.skip_row(Operation::Restore, 400, tongue.label(), &not_caught);
                }
                window_problems.push("no create was caught running".to_string());
            }
            Some((req, got)) => {
                let why = self.differences(Operation::Delete, 400, first.lang(), &got, None);
                self.row(Operation::Delete, 400, first.label(), &req, &got, why);
                for (i, tongue) in tongues.iter().enumerate() {
                    let second = format!("audit_f_second_{}.zip", tongue.slug());
                    self.made.insert(second.clone());
                    let sends = [
                        (Operation::Create, Req::post("/api/backups").auth(Cred::Su).json(json!({"name": second}))),
                        (Operation::Restore, Req::post(format!("/api/backups/{ABSENT}/restore")).auth(Cred::Su)),
                        (Operation::Delete, delete(*tongue)),
                    ];
                    for (op, req) in sends {
                        if op == Operation::Delete && i == 0 {
                            continue;
                        }
                        let req = req.lang(tongue.header());
                        let got = self.send(&req).await;
                        if holder.is_finished() {
                            if op == Operation::Create && matches!(&got, Ok(g) if g.status == 204) {
                                // It ran after the held one: take it away again.
                                let _ = self.send(&Req::delete(format!("/api/backups/{second}")).auth(Cred::Su)).await;
                            }
                            self.skip_row(op, 400, tongue.label(), &finished_meanwhile);
                            continue;
                        }
                        let why = self.differences(op, 400, tongue.lang(), &got, None);
                        if !why.is_empty() {
                            window_problems.push(format!("{} {}", operation_name(op), tongue.label()));
                        }
                        self.row(op, 400, tongue.label(), &req, &got, why);
                    }
                }
                let list = self.send(&Req::get("/api/backups").auth(Cred::Su)).await;
                if !holder.is_finished() && keys_of(&list).is_none() {
                    window_problems.push(format!("list during the create answered {} (R14: list goes on)", self.t.shown(&list)));
                }
            }
        }
        let held = holder.await.ok();
        match held {
            Some(Ok(g)) if g.status == 204 => {}
            Some(got) => window_problems.push(format!("the held create answered {}", self.t.shown(&got))),
            None => window_problems.push("the held create was lost".into()),
        }
        self.probe_from(
            "during a running create: create, restore and delete of its key refused, list served (R13, R14)",
            window_problems,
            "refused with the documented 400s; list answered 200",
        );
    }

    /// Three creates at once: exactly one is accepted.
    pub(super) async fn concurrent_creates(&mut self) {
        let slow = self.dir.is_some();
        let names: Vec<String> = (1..=3).map(|i| format!("audit_g_race_{i}.zip")).collect();
        self.made.extend(names.iter().cloned());
        let sends = names.iter().map(|name| {
            let t = self.t.clone();
            let req = Req::post("/api/backups").auth(Cred::Su).json(json!({"name": name}));
            async move { t.send(&req).await }
        });
        let answers = futures_util::future::join_all(sends).await;
        if let Some(dir) = &self.dir {
            dir.remove_filler();
        }
        let won = answers.iter().filter(|a| matches!(a, Ok(g) if g.status == 204)).count();
        // Which message the refusals carry is the create 400 rows' business.
        let refused = answers.iter().filter(|a| matches!(a, Ok(g) if g.status == 400)).count();
        let name = "three creates at once: exactly one accepted, the others refused (R13)";
        match won {
            1 if refused == 2 => self.probe(name, Verdict::Pass, "one 204, two 400s"),
            1 => self.probe(name, Verdict::Fail, format!("one 204; the others: {}", answers.iter().map(|a| self.t.shown(a)).collect::<Vec<_>>().join(" / "))),
            n if n > 1 && !slow => self.probe(name, Verdict::Skipped, "the creates finished too fast to overlap; with --data-dir the auditor makes them slower"),
            n => self.probe(name, Verdict::Fail, format!("{n} creates accepted: {}", answers.iter().map(|a| self.t.shown(a)).collect::<Vec<_>>().join(" / "))),
        }
    }

    /// Tokens a server must not take (R5, R6).
    pub(super) async fn bad_tokens(&mut self) {
        let (su, user, file) = (self.t.su.clone(), self.t.user.clone(), self.t.su_file.clone());
        let parts: Vec<&str> = su.split('.').collect();
        let user_parts: Vec<&str> = user.split('.').collect();
        let file_parts: Vec<&str> = file.split('.').collect();
        if parts.len() != 3 || user_parts.len() != 3 || file_parts.len() != 3 {
            self.probe("bad tokens are refused with the documented 401 (R5, R6)", Verdict::Skipped, "the server's tokens are not JWTs");
            return;
        }
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let auth_cases: Vec<(&str, Cred)> = vec![
            ("auth: `alg: none`", Cred::Crafted { label: "$ALG_NONE_TOKEN", token: format!("{none}.{}.", parts[1]) }),
            ("auth: a foreign signature", Cred::Crafted { label: "$FOREIGN_SIGNATURE_TOKEN", token: format!("{}.{}.{}", parts[0], parts[1], user_parts[2]) }),
            ("auth: a file token", Cred::SuFile),
            ("auth: not a token", Cred::Crafted { label: "not-a-token", token: "not-a-token".into() }),
        ];
        for (name, cred) in auth_cases {
            for (op, req) in [
                (Operation::List, Req::get("/api/backups")),
                (Operation::Create, Req::post("/api/backups").json(json!({"name": REFUSED}))),
                (Operation::Delete, Req::delete(format!("/api/backups/{NEWER}"))),
            ] {
                let req = req.auth(cred.clone());
                let got = self.send(&req).await;
                let why = self.refused_as(op, 401, &got);
                let title = format!("bad token, {name}: {} refused with the documented 401 (R5)", operation_name(op));
                self.probe_from(&title, why, "401");
            }
        }
        let file_cases = [
            ("download: `alg: none` file token", format!("{none}.{}.", file_parts[1])),
            ("download: a foreign signature", format!("{}.{}.{}", file_parts[0], file_parts[1], user_parts[2])),
            ("download: an auth token as file token", self.t.su.clone()),
        ];
        for (name, token) in file_cases {
            let req = Req::get(format!("/api/backups/{NEWER}?token={token}"));
            let got = self.send(&req).await;
            let why = self.refused_as(Operation::Download, 401, &got);
            self.probe_from(&format!("bad token, {name}: refused with the documented 401 (R6)"), why, "401");
        }
        self.expired_tokens().await;
    }

    /// Tokens signed with the server's own key, an hour past their `exp`: made from the data
    /// dir, the only place the key is (R5, R6).
    pub(super) async fn expired_tokens(&mut self) {
        let email = self.config.superuser.0.clone();
        let signing = |kind: &str| self.dir.as_ref().and_then(|d| d.superuser_signing(&email, kind));
        let (Some(auth), Some(file)) = (signing("authToken"), signing("fileToken")) else {
            let why = "an expired token needs the server's signing key: give --data-dir of a server that keeps its accounts in PocketBase's layout";
            self.probe("bad token, expired", Verdict::Skipped, why);
            return;
        };
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() - 3600;
        let expired = |(collection, id, key): (String, String, Vec<u8>), kind: &str| {
            let mut claims = json!({"collectionId": collection, "exp": exp, "id": id, "type": kind});
            if kind == "auth" {
                claims["refreshable"] = json!(true);
            }
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(&key)).expect("HS256 signs")
        };
        let token = expired(auth, "auth");
        let req = Req::get("/api/backups").auth(Cred::Crafted { label: "$EXPIRED_TOKEN", token });
        let got = self.send(&req).await;
        let why = self.refused_as(Operation::List, 401, &got);
        self.probe_from("bad token, expired: list refused with the documented 401 (R5)", why, "401");
        let token = expired(file, "file");
        let got = self.send(&Req::get(format!("/api/backups/{NEWER}?token={token}"))).await;
        let why = self.refused_as(Operation::Download, 401, &got);
        self.probe_from("bad token, download: an expired file token refused with the documented 401 (R6)", why, "401");
    }

    /// Keys that reach outside the backups storage name nothing (R9): 404, nothing touched.
    pub(super) async fn traversal(&mut self) {
        let outside = self.dir.as_ref().map(|d| d.root.join(OUTSIDE));
        let zip = self.a_zip();
        if let Some(path) = &outside {
            let _ = std::fs::write(path, &zip);
        }
        let keys = ["..%2Faudit_outside.zip", "%2E%2E%2Faudit_outside.zip", "..%5Caudit_outside.zip", "..", "audit%00.zip", ".audit_hidden.zip"];
        let mut problems = Vec::new();
        for key in keys {
            let mut sends = vec![
                (Operation::Delete, Req::delete(format!("/api/backups/{key}")).auth(Cred::Su)),
                (Operation::Download, Req::get(format!("/api/backups/{key}?token=$SUPERUSER_FILE_TOKEN"))),
            ];
            if self.config.allow_restore {
                sends.push((Operation::Restore, Req::post(format!("/api/backups/{key}/restore")).auth(Cred::Su)));
            }
            for (op, req) in sends {
                let got = self.send(&req).await;
                let why = self.refused_as(op, 404, &got);
                if !why.is_empty() {
                    problems.push(format!("{}: {}", req.shown(), why.join(", ")));
                }
            }
        }
        if let Some(path) = &outside {
            if std::fs::read(path).ok().as_deref() != Some(zip.as_slice()) {
                problems.push(format!("{OUTSIDE} beside backups/ was changed or removed"));
            }
            let _ = std::fs::remove_file(path);
        }
        let passed = if outside.is_some() { "404 for every key; the file beside backups/ untouched" } else { "404 for every key" };
        self.probe_from("traversal and impossible keys answer 404 and touch nothing (R9, R20, R21, R25)", problems, passed);
    }
}
