"""The whole flow through the client openapi-python-client generates, against the live
server (scripts/generated-clients generates the package and sets the PB_* variables)."""

from io import BytesIO

import httpx

from pb_backups_client import AuthenticatedClient, Client
from pb_backups_client.api.auth import auth_with_password, file_token
from pb_backups_client.api.backups import (
    create_backup,
    delete_backup,
    download_backup,
    list_backups,
    restore_backup,
    upload_backup,
)
from pb_backups_client.api.health import health
from pb_backups_client.models import AuthResult, AuthWithPasswordBody, CreateBackupBody, Error, UploadBackupBody
from pb_backups_client.types import File
from flow_common import EMAIL, PASSWORD, PREFIX, URL, check_error, until_restored

public = Client(base_url=URL)


def expect_error(status, response):
    """The documented error, read as the Error model."""
    assert isinstance(response.parsed, Error), f"{response.status_code}: {response.content!r} not read as Error"
    return check_error(response.parsed, status, response.status_code)


def expect_ok(status, response):
    assert response.status_code == status, f"{response.status_code}: {response.content!r}"
    return response.parsed


assert expect_ok(200, health.sync_detailed(client=public)).code == 200

expect_error(400, auth_with_password.sync_detailed("_superusers", client=public, body=AuthWithPasswordBody(EMAIL, "not the password")))
expect_error(401, file_token.sync_detailed(client=AuthenticatedClient(base_url=URL, token="not a token")))
login = expect_ok(200, auth_with_password.sync_detailed("_superusers", client=public, body=AuthWithPasswordBody(EMAIL, PASSWORD)))
assert isinstance(login, AuthResult)
expect_error(401, list_backups.sync_detailed(client=public))
client = AuthenticatedClient(base_url=URL, token=login.token)

name = f"{PREFIX}-flow.zip"
expect_ok(204, create_backup.sync_detailed(client=client, body=CreateBackupBody(name=name)))
taken = expect_error(400, create_backup.sync_detailed(client=client, body=CreateBackupBody(name=name)))
assert taken.data["name"].code == "validation_backup_name_exists", taken

listed = {b.key: b for b in expect_ok(200, list_backups.sync_detailed(client=client))}
assert listed[name].size, listed


def new_file_token():
    return expect_ok(200, file_token.sync_detailed(client=client)).token


def download(key):
    return expect_ok(200, download_backup.sync_detailed(key, client=client, token=new_file_token())).payload.read()


archive = download(name)
assert len(archive) == listed[name].size
assert archive[:4] == b"PK\x03\x04"
expect_error(404, download_backup.sync_detailed(f"{PREFIX}-missing.zip", client=client, token=new_file_token()))


def upload(file_name, content):
    body = UploadBackupBody(file=File(payload=BytesIO(content), file_name=file_name, mime_type="application/zip"))
    return upload_backup.sync_detailed(client=client, body=body)


uploaded = f"{PREFIX}-uploaded.zip"
expect_ok(204, upload(uploaded, archive))
assert download(uploaded) == archive
not_zip = expect_error(400, upload(f"{PREFIX}-not-a-zip.zip", b"not a zip"))
assert not_zip.data["file"].code == "validation_invalid_mime_type", not_zip

expect_ok(204, delete_backup.sync_detailed(uploaded, client=client))
expect_error(404, delete_backup.sync_detailed(uploaded, client=client))

expect_error(404, restore_backup.sync_detailed(f"{PREFIX}-missing.zip", client=client))
expect_ok(204, restore_backup.sync_detailed(name, client=client))
after = f"{PREFIX}-after-restore.zip"


def try_create():
    response = create_backup.sync_detailed(client=client, body=CreateBackupBody(name=after))
    if response.status_code == 204:
        return True
    expect_error(400, response)
    return False


until_restored(try_create, (httpx.TransportError,))
expect_ok(204, delete_backup.sync_detailed(name, client=client))
expect_ok(204, delete_backup.sync_detailed(after, client=client))
print("openapi-python-client: whole flow passed")
