//! The documented responses the audit can bring about on purpose: create, list, download
//! (with its ranges), the refusals of bad names and bodies, uploads, 404s, delete, and the
//! storage failure when the data dir is given.

use pb_backups_spec::{Lang, Operation};
use serde_json::json;

use super::{ABSENT, Auditor, NEWER, REFUSED, SEED, UPLOADED, keys_of};
use crate::datadir::{self, DataDir};
use crate::http::{Cred, Req};
use crate::AuditError;

impl Auditor {
    /// create 204, list 200, download 200, and the download's Range probe.
    pub(super) async fn made_and_listed(&mut self) -> Result<(), AuditError> {
        self.made.insert(SEED.into());
        let req = Req::post("/api/backups").auth(Cred::Su).json(json!({"name": SEED}));
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::Create, 204, Lang::Zh, &got, None);
        let listed = self.list_keys().await.unwrap_or_default();
        if !listed.contains(SEED) {
            why.push(format!("{SEED} is not listed after the 204"));
        }
        if let Some(dir) = &self.dir {
            if listed.contains(SEED) && !dir.has_backup(SEED) {
                // The data dir given is not the one this server writes to: stop here.
                let _ = self.send(&Req::delete(format!("/api/backups/{SEED}")).auth(Cred::Su)).await;
                return Err(AuditError::DataDir(format!("{SEED} was made but is not in {}", dir.backups().display())));
            }
        }
        self.row(Operation::Create, 204, "any", &req, &got, why);

        // A second backup, newer but later by key, so that the order shows.
        let newer = self.create(NEWER).await;
        let req = Req::get("/api/backups").auth(Cred::Su);
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::List, 200, Lang::Zh, &got, None);
        if !matches!(&newer, Ok(g) if g.status == 204) {
            why.push(format!("making {NEWER} answered {}", self.t.shown(&newer)));
        }
        let keys = keys_of(&got).unwrap_or_default();
        for key in [SEED, NEWER] {
            if got.as_ref().is_ok_and(|g| g.status == 200) && !keys.contains(key) {
                why.push(format!("{key} is not listed"));
            }
        }
        self.row(Operation::List, 200, "any", &req, &got, why);

        let req = Req::get(format!("/api/backups/{SEED}?token=$SUPERUSER_FILE_TOKEN"));
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::Download, 200, Lang::Zh, &got, Some(SEED));
        if let Ok(g) = &got {
            if let Some(length) = g.header("content-length") {
                if length != g.body.len().to_string() {
                    why.push("Content-Length is not the size of the body".into());
                }
            }
            if let Some(stored) = self.dir.as_ref().and_then(|d| d.backup_bytes(SEED)) {
                if stored != g.body {
                    why.push("the bytes are not the stored backup's".into());
                }
            }
            if g.status == 200 && g.body.starts_with(b"PK") {
                self.seed_bytes = Some(g.body.clone());
            }
        }
        self.row(Operation::Download, 200, "any", &req, &got, why);

        let ranged = Req::get(format!("/api/backups/{SEED}?token=$SUPERUSER_FILE_TOKEN")).range("bytes=0-9");
        let got = self.send(&ranged).await;
        let mut problems = Vec::new();
        match (&got, &self.seed_bytes) {
            (Ok(g), Some(full)) if g.status == 206 => {
                let want = format!("bytes 0-9/{}", full.len());
                if g.header("content-range") != Some(want.as_str()) {
                    problems.push(format!("Content-Range {:?} where \"bytes 0-9/SIZE\" is due", g.header("content-range").unwrap_or("(none)")));
                }
                if g.body != full[..10.min(full.len())] {
                    problems.push("the 10 bytes are not the backup's first 10".into());
                }
            }
            (Ok(_), None) => problems.push("no backup could be downloaded".into()),
            _ => problems.push(format!("got {} where 206 is due", self.t.shown(&got))),
        }
        self.probe_from("download: `Range: bytes=0-9` answers 206 with those bytes (R25)", problems, "206, Content-Range and the first 10 bytes");
        Ok(())
    }

    pub(super) fn a_zip(&self) -> Vec<u8> {
        self.seed_bytes.clone().unwrap_or_else(|| b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec())
    }

    /// 401 and 403 for every operation, and nothing changed by them.
    pub(super) async fn refusals(&mut self) {
        let before = self.dir.as_ref().map(DataDir::snapshot);
        let zip = self.a_zip();
        for tongue in self.tongues.clone() {
            for (status, cred, file) in [(401, None, None), (403, Some(Cred::User), Some("$USER_FILE_TOKEN"))] {
                let with = |req: Req| match &cred {
                    Some(c) => req.auth(c.clone()),
                    None => req,
                };
                let name = json!({"name": REFUSED});
                self.documented(Operation::List, status, tongue, with(Req::get("/api/backups")), None).await;
                self.documented(Operation::Create, status, tongue, with(Req::post("/api/backups").json(name)), None).await;
                let upload = with(Req::post("/api/backups/upload").file(REFUSED, zip.clone(), "a backup zip made by this server"));
                self.documented(Operation::Upload, status, tongue, upload, None).await;
                self.documented(Operation::Delete, status, tongue, with(Req::delete(format!("/api/backups/{NEWER}"))), None).await;
                let restore = with(Req::post(format!("/api/backups/{ABSENT}/restore")));
                self.documented(Operation::Restore, status, tongue, restore, None).await;
                let download = match file {
                    Some(token) => Req::get(format!("/api/backups/{NEWER}?token={token}")),
                    None => Req::get(format!("/api/backups/{NEWER}")),
                };
                self.documented(Operation::Download, status, tongue, download, None).await;
            }
        }
        self.made.insert(REFUSED.into());
        let mut problems = Vec::new();
        match self.list_keys().await {
            Some(keys) => {
                if !keys.contains(NEWER) {
                    problems.push(format!("{NEWER} is gone after the refused deletes"));
                }
                if keys.contains(REFUSED) {
                    problems.push(format!("{REFUSED} exists after refused creates and uploads"));
                }
            }
            None => problems.push("the list failed after the refused requests".into()),
        }
        if let (Some(before), Some(dir)) = (before, &self.dir) {
            problems.extend(datadir::changes(&before, &dir.snapshot()));
        }
        let how = if self.dir.is_some() { "the backups and the data dir's files are unchanged" } else { "the backups are unchanged (no --data-dir: files not compared)" };
        self.probe_from("401 and 403 change nothing (R4)", problems, how);
    }

    /// upload 204 and 400.
    pub(super) async fn uploads(&mut self) {
        self.made.insert(UPLOADED.into());
        let zip = self.a_zip();
        let req = Req::post("/api/backups/upload").auth(Cred::Su).file(UPLOADED, zip.clone(), "a backup zip made by this server");
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::Upload, 204, Lang::Zh, &got, None);
        if !self.list_keys().await.unwrap_or_default().contains(UPLOADED) {
            why.push(format!("{UPLOADED} is not listed after the 204"));
        }
        if let Some(stored) = self.dir.as_ref().map(|d| d.backup_bytes(UPLOADED)) {
            if stored.as_deref() != Some(zip.as_slice()) {
                why.push("the stored file is not the bytes sent".into());
            }
        }
        self.row(Operation::Upload, 204, "any", &req, &got, why);

        for tongue in self.tongues.clone() {
            let name = format!("audit_d_notzip_{}.zip", tongue.slug());
            self.made.insert(name.clone());
            let req = Req::post("/api/backups/upload").auth(Cred::Su).file(&name, b"plain text, not a zip".to_vec(), "the text `plain text, not a zip`").lang(tongue.header());
            let got = self.send(&req).await;
            let mut why = self.differences(Operation::Upload, 400, tongue.lang(), &got, None);
            if self.list_keys().await.unwrap_or_default().contains(&name) {
                why.push(format!("{name} is listed after the refusal"));
            }
            self.row(Operation::Upload, 400, tongue.label(), &req, &got, why);
        }
    }

    /// 404 of delete, restore and download.
    pub(super) async fn not_found(&mut self) {
        for tongue in self.tongues.clone() {
            let path = format!("/api/backups/{ABSENT}");
            self.documented(Operation::Delete, 404, tongue, Req::delete(&path).auth(Cred::Su), None).await;
            self.documented(Operation::Restore, 404, tongue, Req::post(format!("{path}/restore")).auth(Cred::Su), None).await;
            self.documented(Operation::Download, 404, tongue, Req::get(format!("{path}?token=$SUPERUSER_FILE_TOKEN")), None).await;
        }
    }

    pub(super) async fn delete_204(&mut self) {
        let req = Req::delete(format!("/api/backups/{UPLOADED}")).auth(Cred::Su);
        let got = self.send(&req).await;
        let mut why = self.differences(Operation::Delete, 204, Lang::Zh, &got, None);
        if self.list_keys().await.unwrap_or_default().contains(UPLOADED) {
            why.push(format!("{UPLOADED} is still listed after the 204"));
        }
        if self.dir.as_ref().is_some_and(|d| d.has_backup(UPLOADED)) {
            why.push(format!("{UPLOADED} is still in backups/"));
        }
        self.row(Operation::Delete, 204, "any", &req, &got, why);
    }

    /// list 400 and download 400: the backups storage cannot be opened.
    pub(super) async fn storage_failure(&mut self) {
        let Some(dir) = &self.dir else {
            for tongue in self.tongues.clone() {
                for op in [Operation::List, Operation::Download] {
                    self.skip_row(op, 400, tongue.label(), "needs --data-dir, to make the backups storage fail");
                }
            }
            return;
        };
        if let Err(e) = dir.break_storage() {
            let why = format!("could not break the storage: {e}");
            for tongue in self.tongues.clone() {
                for op in [Operation::List, Operation::Download] {
                    self.skip_row(op, 400, tongue.label(), &why);
                }
            }
            return;
        }
        for tongue in self.tongues.clone() {
            self.documented(Operation::List, 400, tongue, Req::get("/api/backups").auth(Cred::Su), None).await;
            let download = Req::get(format!("/api/backups/{SEED}?token=$SUPERUSER_FILE_TOKEN"));
            self.documented(Operation::Download, 400, tongue, download, None).await;
        }
        let mended = self.dir.as_ref().map(DataDir::mend_storage);
        let mut problems = Vec::new();
        if let Some(Err(e)) = mended {
            problems.push(format!("could not mend the storage: {e}"));
        }
        if !self.list_keys().await.unwrap_or_default().contains(SEED) {
            problems.push(format!("{SEED} is not listed once the storage is back"));
        }
        self.probe_from("the server serves the backups again once the storage is back", problems, "list 200 with the backups");
    }
}
