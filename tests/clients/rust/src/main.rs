//! The whole flow through the client OpenAPI Generator makes with `-g rust`, against the live
//! server at PB_URL (scripts/generated-clients generates the client and sets the PB_* variables).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use pb_backups_client::apis::auth_api::{self, AuthWithPasswordError, FileTokenError};
use pb_backups_client::apis::backups_api::{
    self, CreateBackupError, DeleteBackupError, DownloadBackupError, ListBackupsError, RestoreBackupError,
    UploadBackupError,
};
use pb_backups_client::apis::configuration::{ApiKey, Configuration};
use pb_backups_client::apis::{health_api, Error as ApiError};
use pb_backups_client::models::{self, AuthWithPasswordBody, CreateBackupBody};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set"))
}

/// The Error model inside an operation's error enum. The generated enums are untagged, so
/// every error body lands in their first variant: the HTTP status is checked separately.
/// Variants after `/` hold another model (the login's 401 asks for a second factor with
/// `MfaRequired`); every variant is named, so a new one in the document fails this build.
trait ErrorModel {
    fn model(self) -> Option<models::Error>;
}

macro_rules! error_model {
    ($($ty:ident: $($variant:ident),+ $(/ $($other:ident),+)?;)+) => {$(
        impl ErrorModel for $ty {
            fn model(self) -> Option<models::Error> {
                match self {
                    $($ty::$variant(e))|+ => Some(e),
                    $($($ty::$other(_))|+ => None,)?
                    $ty::UnknownValue(_) => None,
                }
            }
        }
    )+};
}

error_model! {
    AuthWithPasswordError: Status400, Status403, Status404, Status429 / Status401;
    FileTokenError: Status400, Status401, Status403;
    ListBackupsError: Status400, Status401, Status403;
    CreateBackupError: Status400, Status401, Status403;
    UploadBackupError: Status400, Status401, Status403;
    DeleteBackupError: Status400, Status401, Status403, Status404;
    RestoreBackupError: Status400, Status401, Status403, Status404;
    DownloadBackupError: Status400, Status401, Status403, Status404;
}

/// The documented error, read as the Error model.
fn expect_error<T: Debug, E: ErrorModel + Debug>(status: u16, result: Result<T, ApiError<E>>) -> models::Error {
    match result {
        Err(ApiError::ResponseError(r)) => {
            assert_eq!(r.status.as_u16(), status, "{}", r.content);
            let e = r.entity.and_then(ErrorModel::model).unwrap_or_else(|| panic!("not read as Error: {}", r.content));
            assert_eq!(e.status, status, "{e:?}");
            assert!(!e.message.is_empty(), "{e:?}");
            e
        }
        other => panic!("expected {status}, got {other:?}"),
    }
}

fn config(base: &str, token: Option<&str>) -> Configuration {
    Configuration {
        base_path: base.to_string(),
        api_key: token.map(|key| ApiKey { prefix: Some("Bearer".into()), key: key.to_string() }),
        ..Configuration::default()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (url, email, password, prefix) = (env("PB_URL"), env("PB_EMAIL"), env("PB_PASSWORD"), env("PB_PREFIX"));
    // The generated client has one api_key for both schemes: the public configuration (no
    // key) is the one downloads use, with the file token as their `token` parameter.
    let public = config(&url, None);
    assert_eq!(health_api::health(&public).await.unwrap().code, 200);

    let wrong = AuthWithPasswordBody::new(email.clone(), "not the password".into());
    expect_error(400, auth_api::auth_with_password(&public, "_superusers", wrong, None).await);
    expect_error(401, auth_api::file_token(&public).await);
    let login = auth_api::auth_with_password(&public, "_superusers", AuthWithPasswordBody::new(email, password), None)
        .await
        .unwrap();
    expect_error(401, backups_api::list_backups(&public, None).await);
    let authed = config(&url, Some(&login.token));

    let name = format!("{prefix}-flow.zip");
    let create = |name: &str| CreateBackupBody { name: Some(Some(name.to_string())) };
    backups_api::create_backup(&authed, Some(create(&name))).await.unwrap();
    let taken = expect_error(400, backups_api::create_backup(&authed, Some(create(&name))).await);
    assert_eq!(taken.data["name"].code, "validation_backup_name_exists");

    let listed = backups_api::list_backups(&authed, None).await.unwrap();
    let size = listed.iter().find(|b| b.key.as_deref() == Some(&name)).and_then(|b| b.size).expect("listed with its size");

    let file_token = || async { auth_api::file_token(&authed).await.unwrap().token };
    let download = |key: String| {
        let (public, file_token) = (&public, &file_token);
        async move {
            let response = backups_api::download_backup(public, &key, &file_token().await).await.unwrap();
            assert_eq!(response.headers()["content-type"], "application/zip");
            response.bytes().await.unwrap().to_vec()
        }
    };
    let archive = download(name.clone()).await;
    assert_eq!(archive.len() as u64, size);
    assert_eq!(&archive[..4], b"PK\x03\x04");
    let missing = format!("{prefix}-missing.zip");
    expect_error(404, backups_api::download_backup(&public, &missing, &file_token().await).await);

    // The generated upload takes a path and sends its file name: write the files to send.
    let dir = std::env::temp_dir().join(format!("pb-backups-client-flow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uploaded = format!("{prefix}-uploaded.zip");
    std::fs::write(dir.join(&uploaded), &archive).unwrap();
    backups_api::upload_backup(&authed, dir.join(&uploaded)).await.unwrap();
    assert!(download(uploaded.clone()).await == archive, "uploaded bytes come back");
    let not_zip = dir.join(format!("{prefix}-not-a-zip.zip"));
    std::fs::write(&not_zip, b"not a zip").unwrap();
    let refused = expect_error(400, backups_api::upload_backup(&authed, not_zip).await);
    assert_eq!(refused.data["file"].code, "validation_invalid_mime_type");
    std::fs::remove_dir_all(&dir).unwrap();

    backups_api::delete_backup(&authed, &uploaded).await.unwrap();
    expect_error(404, backups_api::delete_backup(&authed, &uploaded).await);

    expect_error(404, backups_api::restore_backup(&authed, &missing).await);
    backups_api::restore_backup(&authed, &name).await.unwrap();
    // Back once the restarted server accepts a create; a connection the restart closed is retried.
    let after = format!("{prefix}-after-restore.zip");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the server did not finish the restore within 60 s");
        match backups_api::create_backup(&authed, Some(create(&after))).await {
            Ok(()) => break,
            Err(ApiError::ResponseError(r)) => assert_eq!(r.status.as_u16(), 400, "busy while restoring: {}", r.content),
            Err(ApiError::Reqwest(_)) => {}
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    backups_api::delete_backup(&authed, &name).await.unwrap();
    backups_api::delete_backup(&authed, &after).await.unwrap();
    println!("OpenAPI Generator (rust): whole flow passed");
}
