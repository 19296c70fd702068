//! Checking a bucket: the settings' test (a small object written and deleted, as PocketBase
//! does) and `check-s3`'s step-by-step check, with failures told apart ([`Problem`]) and
//! explained to the operator.

use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::lease::LEASES;
use super::S3Storage;

impl S3Storage {
    /// Writes a small object under a fresh `pb_settings_test_<random>/` folder and deletes it,
    /// as PocketBase's settings test does; the store's failure is logged, its kind returned.
    pub async fn write_test_object(&self) -> Result<(), Problem> {
        use rand::distr::{Alphanumeric, SampleString};
        let folder = format!("pb_settings_test_{}", Alphanumeric.sample_string(&mut rand::rng(), 5));
        let probe = self.join(&format!("{folder}/test.txt"));
        let logged = |step: &str, e: object_store::Error| {
            tracing::warn!(problem = %explain(step, &e), "S3 test failed");
            Problem::of(&e)
        };
        self.store
            .put(&probe, PutPayload::from_static(b"test"))
            .await
            .map_err(|e| logged("writing a test object", e))?;
        self.store.delete(&probe).await.map_err(|e| logged("deleting the test object", e))
    }

    /// Checks a configuration step by step: reachable, bucket there, allowed to list and
    /// write, conditional writes honoured. Returns what was checked, or what is wrong.
    pub async fn check(&self) -> Result<Vec<String>, String> {
        let mut done = Vec::new();
        let prefix = (!self.prefix.is_empty()).then(|| Path::parse(&self.prefix).expect("checked in new"));
        self.store.list_with_delimiter(prefix.as_ref()).await.map_err(|e| explain("listing the prefix", &e))?;
        done.push("reached the endpoint; the bucket exists; listing is allowed".to_string());

        // Writes carry a SHA-256 checksum header when checksums are on: a store that rejects
        // it fails from here on, and the message says how to turn them off.
        let hint = |e: String| match self.checksums {
            true => format!("{e} (checksums are on: a store without x-amz-checksum-sha256 support needs --backups-s3-checksums=false)"),
            false => e,
        };
        let probe = self.join(&format!("{LEASES}/.check-{}", self.holder));
        let create = || PutOptions::from(PutMode::Create);
        self.store
            .put_opts(&probe, PutPayload::from_static(b"check"), create())
            .await
            .map_err(|e| hint(explain("writing a test object", &e)))?;
        let second = self.store.put_opts(&probe, PutPayload::from_static(b"again"), create()).await;
        let _ = self.store.delete(&probe).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
            Ok(_) => {
                return Err("the store ignores If-None-Match on PUT: two servers sharing this bucket could \
                            overwrite each other's backups; use a store with conditional writes"
                    .into())
            }
            Err(e) => return Err(hint(explain("testing a conditional write", &e))),
        }
        done.push("writes allowed; conditional PUT (If-None-Match) honoured".to_string());

        let upload_id = self
            .store
            .create_multipart(&probe)
            .await
            .map_err(|e| hint(explain("starting a multipart upload", &e)))?;
        let result = async {
            let part = self
                .store
                .put_part(&probe, &upload_id, 0, PutPayload::from_static(b"check"))
                .await
                .map_err(|e| explain("uploading a part", &e))?;
            self.complete_if_absent(&probe, &upload_id, &[part])
                .await
                .map_err(|e| format!("completing a multipart upload with If-None-Match: {e}"))
        }
        .await;
        if result.is_err() {
            let _ = self.store.abort_multipart(&probe, &upload_id).await;
        }
        let _ = self.store.delete(&probe).await;
        result.map_err(hint)?;
        done.push(match self.checksums {
            true => "conditional multipart upload with SHA-256 part checksums works; test objects removed".to_string(),
            false => "conditional multipart upload works (part checksums off); test objects removed".to_string(),
        });
        Ok(done)
    }
}

/// What kind of failure a request to the store met, told from object_store's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No keys were given and the default chain found none.
    NoCredentials,
    NoBucket,
    /// Keys refused, or not allowed to do this.
    Refused,
    /// Connection refused, no such host, timed out.
    Unreachable,
    /// The store lacks a feature this server needs.
    Unsupported,
    Unexpected,
}

impl Problem {
    fn of(e: &object_store::Error) -> Problem {
        // object_store's messages already repeat their sources; the innermost says the most.
        let chain = format!("{e}: {}", root_cause(e));
        if chain.contains("169.254.169.254") || chain.contains("credential") {
            Problem::NoCredentials
        } else if chain.contains("NoSuchBucket") || matches!(e, object_store::Error::NotFound { .. }) {
            Problem::NoBucket
        } else if matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
            // A status as object_store prints it, never a bare "403": URLs with a port or a
            // random object name hold such digits (a refused connection was called denied).
            || ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "status code: 403", "status code: 401"]
                .iter()
                .any(|s| chain.contains(s))
        {
            Problem::Refused
        } else if ["connect", "Connection refused", "dns", "timed out", "tcp"].iter().any(|s| chain.contains(s)) {
            Problem::Unreachable
        } else if matches!(e, object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) {
            Problem::Unsupported
        } else {
            Problem::Unexpected
        }
    }
}

fn root_cause(e: &object_store::Error) -> &dyn std::error::Error {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    root
}

/// An operator-facing description of a failed step, with the likely cause first.
fn explain(step: &str, e: &object_store::Error) -> String {
    let hint = match Problem::of(e) {
        Problem::NoCredentials => {
            "no usable credentials: set PB_BACKUPS_S3_ACCESS_KEY and PB_BACKUPS_S3_SECRET_KEY \
             (without them only instance-metadata credentials are tried)"
        }
        Problem::NoBucket => "the bucket does not exist (buckets are never created by pb-backups)",
        Problem::Refused => {
            "access denied: check the access key and secret (PB_BACKUPS_S3_ACCESS_KEY / PB_BACKUPS_S3_SECRET_KEY, \
             or the settings' backups.s3) and the bucket's permissions"
        }
        Problem::Unreachable => {
            "cannot reach the endpoint: check it (and path-style requests for IP addresses or MinIO)"
        }
        Problem::Unsupported => "the store lacks a feature pb-backups needs",
        Problem::Unexpected => "unexpected answer from the store",
    };
    let detail: String = root_cause(e).to_string().chars().take(400).collect();
    format!("{step}: {hint}\n  cause: {detail}")
}

#[cfg(test)]
mod tests {
    use super::Problem;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: message.into() }
    }

    #[test]
    fn digits_in_a_url_do_not_make_a_refused_connection_a_denial() {
        let e = generic("Error performing PUT http://127.0.0.1:40312/bucket/x4013 - error sending request: Connection refused");
        assert_eq!(Problem::of(&e), Problem::Unreachable);
    }

    #[test]
    fn a_forbidden_status_is_a_denial() {
        let e = generic("Error performing PUT http://127.0.0.1:9000/b/x - Server returned non-2xx status code: 403 Forbidden: ");
        assert_eq!(Problem::of(&e), Problem::Refused);
        let e = object_store::Error::PermissionDenied { path: "x".into(), source: "denied".into() };
        assert_eq!(Problem::of(&e), Problem::Refused);
    }
}
