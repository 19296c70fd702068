//! Restores (only with `--allow-restore`): each awaited through the server's restart, and
//! a delete and a restore of one backup at once.

use std::time::{Duration, Instant};

use pb_backups_spec::{Lang, Operation};
use serde_json::json;

use super::{Auditor, BESIDE_PASSED, SEED, file_token, login};
use crate::datadir::{self, DataDir};
use crate::http::{Cred, Req};
use crate::report::Verdict;

impl Auditor {
    /// Waits until the server answers again after a restore was accepted, counting refused
    /// connections; then until it is idle (a create is accepted) and the marker is gone.
    pub(super) async fn await_restore(&mut self, marker: bool) -> (usize, Vec<String>) {
        let deadline = Instant::now() + self.config.restore_wait;
        let mut refused = 0;
        let mut problems = Vec::new();
        let mut round = 0;
        // No pooled connections: every poll opens a fresh one, so a refused connection shows
        // as one. Polled every few milliseconds: a restart's window without a listener can be
        // a few tens of milliseconds, and a slower poll could miss it.
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().expect("a client");
        loop {
            if Instant::now() > deadline {
                problems.push(format!("not back and idle within {} s", self.config.restore_wait.as_secs()));
                break;
            }
            match self.t.send_with(&fresh, &Req::get("/api/health")).await {
                Err(e) if e.is_connect() => refused += 1,
                Err(_) => {}
                Ok(g) if g.status == 200 => {
                    let gone = !marker || !self.dir.as_ref().is_some_and(DataDir::has_marker);
                    if gone {
                        round += 1;
                        let name = format!("audit_i_idle_{round}.zip");
                        if matches!(self.create(&name).await, Ok(g) if g.status == 204) {
                            break;
                        }
                    }
                }
                Ok(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if marker && self.dir.as_ref().is_some_and(DataDir::has_marker) {
            problems.push(format!("{} written after the backup is still there: the data was not restored", datadir::MARKER));
        }
        // The backup's accounts: log in again in case the tokens changed.
        if let Ok((200, su)) = login(&self.t.http, &self.t.base, "_superusers", &self.config.superuser).await {
            self.t.su = su;
        }
        if let Ok((200, user)) = login(&self.t.http, &self.t.base, "users", &self.config.user).await {
            self.t.user = user;
        }
        if let Some(token) = file_token(&self.t.http, &self.t.base, &self.t.su).await {
            self.t.su_file = token;
        }
        if let Some(token) = file_token(&self.t.http, &self.t.base, &self.t.user).await {
            self.t.user_file = token;
        }
        (refused, problems)
    }

    /// restore 204 and the probes that restore.
    pub(super) async fn restores(&mut self) {
        if !self.config.allow_restore {
            self.skip_row(Operation::Restore, 204, "any", "restores run only with --allow-restore");
            return;
        }
        let marker = self.dir.as_ref().is_some_and(|d| d.write_marker().is_ok());
        let req = Req::post(format!("/api/backups/{SEED}/restore")).auth(Cred::Su);
        let got = self.send(&req).await;
        // At once: nothing may run beside the accepted restore.
        let beside = Req::post("/api/backups").auth(Cred::Su).json(json!({"name": "audit_h_beside.zip"}));
        self.made.insert("audit_h_beside.zip".into());
        let beside_got = self.send(&beside).await;
        let why = self.differences(Operation::Restore, 204, Lang::Zh, &got, None);
        let accepted = why.is_empty();
        self.row(Operation::Restore, 204, "any", &req, &got, why);
        if !accepted {
            if let Some(d) = &self.dir {
                d.remove_marker();
            }
            return;
        }
        let (refused, problems) = self.await_restore(marker).await;
        let name = "a create sent right after the restore's 204 is refused, or runs after the restore (R13, R21)";
        match &beside_got {
            // One text for every way to pass, so that reports do not change from run to run.
            Err(_) => self.probe(name, Verdict::Pass, BESIDE_PASSED),
            Ok(_) if self.refused_as(Operation::Create, 400, &beside_got).is_empty() => self.probe(name, Verdict::Pass, BESIDE_PASSED),
            Ok(g) if g.status == 204 && marker => {
                // Its backup tells when it ran: with the marker, before the restore took effect.
                let got = self.send(&Req::get("/api/backups/audit_h_beside.zip?token=$SUPERUSER_FILE_TOKEN")).await;
                let holds_marker = got.as_ref().is_ok_and(|g| g.body.windows(datadir::MARKER.len()).any(|w| w == datadir::MARKER.as_bytes()));
                match got {
                    Ok(g) if g.status == 200 && holds_marker => self.probe(
                        name,
                        Verdict::Fail,
                        format!("accepted (204), and its backup holds {} written after the restored backup: it ran beside the restore", datadir::MARKER),
                    ),
                    Ok(g) if g.status == 200 => self.probe(name, Verdict::Pass, BESIDE_PASSED),
                    other => self.probe(name, Verdict::Fail, format!("accepted (204), but its backup cannot be downloaded: {}", self.t.shown(&other))),
                }
            }
            Ok(g) if g.status == 204 => {
                self.probe(name, Verdict::Skipped, "accepted; without --data-dir the auditor cannot tell whether it ran beside the restore or after it")
            }
            Ok(_) => self.probe(name, Verdict::Fail, format!("got {}", self.t.shown(&beside_got))),
        }
        let what = if marker { "the data is the backup's, and the server is idle again" } else { "the server is idle again (no --data-dir: data not compared)" };
        self.probe_from("restore takes effect (R23)", problems, what);
        if refused == 0 {
            self.probe("no connection refused while the server restarts (R23)", Verdict::Pass, "every connection was answered");
        } else {
            self.probe("no connection refused while the server restarts (R23)", Verdict::Fail, "connections were refused while the server restarted");
        }
        if let Some(d) = &self.dir {
            d.remove_marker();
        }
        self.delete_and_restore_at_once().await;
    }

    /// A delete of the key being restored, sent the moment the restore is accepted: refused,
    /// or (once the restore took effect) accepted; never accepted with the restore lost.
    pub(super) async fn delete_and_restore_at_once(&mut self) {
        let name = "delete and restore of one key at once: never both accepted (R20, R21)";
        let key = "audit_j_pair.zip";
        if !matches!(self.create(key).await, Ok(g) if g.status == 204) {
            self.probe(name, Verdict::Skipped, "could not make the backup to race on");
            return;
        }
        let marker = self.dir.as_ref().is_some_and(|d| d.write_marker().is_ok());
        let restore = self.send(&Req::post(format!("/api/backups/{key}/restore")).auth(Cred::Su)).await;
        if !matches!(&restore, Ok(g) if g.status == 204) {
            self.probe(name, Verdict::Skipped, format!("the restore answered {}", self.t.shown(&restore)));
            return;
        }
        let deleted = self.send(&Req::delete(format!("/api/backups/{key}")).auth(Cred::Su)).await;
        let (_, problems) = self.await_restore(marker).await;
        let passed = "the delete was refused, or ran after the restore took effect";
        match &deleted {
            Ok(g) if g.status == 204 && !marker => {
                self.probe(name, Verdict::Skipped, "the delete was accepted; without --data-dir the auditor cannot tell whether the restore was lost")
            }
            Ok(g) if g.status == 204 && !problems.is_empty() => self.probe(
                name,
                Verdict::Fail,
                format!("both answered 204, and the restore never took effect: {}", problems.join("; ")),
            ),
            _ => self.probe(name, Verdict::Pass, passed),
        }
        if let Some(d) = &self.dir {
            d.remove_marker();
        }
    }
}
