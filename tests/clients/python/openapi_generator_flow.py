"""The whole flow through the client OpenAPI Generator makes with `-g python`, against the
live server (scripts/generated-clients generates the package and sets the PB_* variables)."""

import urllib3

import pb_backups_client as pb
from flow_common import EMAIL, PASSWORD, PREFIX, URL, check_error, until_restored

config = pb.Configuration(host=URL)
client = pb.ApiClient(config)
auth, backups, health = pb.AuthApi(client), pb.BackupsApi(client), pb.HealthApi(client)


def expect_error(status, call, *args, **kwargs):
    """Calls the operation, which must raise the documented error, read as the Error model."""
    try:
        call(*args, **kwargs)
    except pb.ApiException as e:
        assert isinstance(e.data, pb.Error), f"{e.status}: {e.body!r} not read as Error"
        return check_error(e.data, status, e.status)
    raise AssertionError(f"{call.__name__}: no error, expected {status}")


assert health.health().code == 200

expect_error(400, auth.auth_with_password, "_superusers", pb.AuthWithPasswordBody(identity=EMAIL, password="not the password"))
expect_error(401, auth.file_token)
login = auth.auth_with_password("_superusers", pb.AuthWithPasswordBody(identity=EMAIL, password=PASSWORD))
expect_error(401, backups.list_backups)
# The FileToken scheme stays unset: downloads take the file token as their `token` parameter.
config.api_key["AuthToken"] = login.token

name = f"{PREFIX}-flow.zip"
backups.create_backup(pb.CreateBackupBody(name=name))
taken = expect_error(400, backups.create_backup, pb.CreateBackupBody(name=name))
assert taken.data["name"].code == "validation_backup_name_exists", taken

listed = {b.key: b for b in backups.list_backups()}
assert listed[name].size, listed


def download(key):
    return bytes(backups.download_backup(key, token=auth.file_token().token))


archive = download(name)
assert len(archive) == listed[name].size
assert archive[:4] == b"PK\x03\x04"
expect_error(404, backups.download_backup, f"{PREFIX}-missing.zip", token=auth.file_token().token)

uploaded = f"{PREFIX}-uploaded.zip"
backups.upload_backup(file=(uploaded, archive))
assert download(uploaded) == archive
not_zip = expect_error(400, backups.upload_backup, file=(f"{PREFIX}-not-a-zip.zip", b"not a zip"))
assert not_zip.data["file"].code == "validation_invalid_mime_type", not_zip

backups.delete_backup(uploaded)
expect_error(404, backups.delete_backup, uploaded)

expect_error(404, backups.restore_backup, f"{PREFIX}-missing.zip")
backups.restore_backup(name)
after = f"{PREFIX}-after-restore.zip"


def try_create():
    try:
        backups.create_backup(pb.CreateBackupBody(name=after))
        return True
    except pb.ApiException as e:
        assert e.status == 400, e
        return False


until_restored(try_create, (urllib3.exceptions.HTTPError,))
backups.delete_backup(name)
backups.delete_backup(after)
print("OpenAPI Generator (python): whole flow passed")
