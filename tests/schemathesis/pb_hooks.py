"""Schemathesis hooks for pb-backups (loaded by scripts/schemathesis).

The spec answers some schema-valid requests with 400 for reasons no schema can express:
a name that is already taken, a file that is not a zip, another create or restore running
(for a verify: a restore),
an archive that cannot be restored, a `fields` expression with unbalanced parentheses or
quotes (a grammar no regular expression describes). Schemathesis' own
`positive_data_acceptance` counts every such 400 as a failure, so it is switched off for
those operations (schemathesis.toml) and `documented_rejection` below takes its place: a
schema-valid request may get 400 only with one of these documented reasons, anything else
still fails.

`map_body` also turns half of the generated upload files into a real (small) zip, so that
uploads are seen to succeed, and list, download, delete and restore meet real keys; and
`before_call` leaves the S3 sections out of settings changes: a generated `backups.s3` that passes
validation would send every later backups request to a made-up host outside this machine
(tests/pocketbase/s3.rs and tests/s3.rs cover those sections against moto). So the S3 test
always meets sections that are off.
"""

import io
import zipfile
import zlib

import schemathesis
from schemathesis.transport.serialization import Binary

BUSY_CREATE = {
    "请稍后重试 - 另一个备份/恢复进程已经启动。",
    "Try again later - another backup/restore process has already been started.",
}
BUSY = {
    "请稍后重试 - 另一个备份/恢复进程已在运行。",
    "Try again later - another backup/restore process has already been started.",
}
ARCHIVE_REFUSED = {
    "无法恢复该备份。",
    "The backup cannot be restored.",
    "压缩包包含不安全的条目（绝对路径、.. 、链接、重复或数据重叠的条目、过长或过深的名称）。",
    "压缩包解压后过大。",
    "The archive is too large once extracted.",
    "压缩包中没有 data.db。",
    "The archive has no data.db.",
    "压缩包中的 data.db 不是 SQLite 数据库。",
    "The data.db in the archive is not an SQLite database.",
    "压缩包已损坏。",
    "The archive is corrupt.",
}
# (operation, field) -> validation codes that a schema-valid request may still earn.
FIELD_CODES = {
    ("listBackups", "fields"): {"validation_invalid_fields"},
    # The name is free (the schema's pattern holds) unless a backup already has it.
    ("createBackup", "name"): {"validation_backup_name_exists"},
    # The schema says "a file"; the key comes from its file name and the content must be a zip.
    ("uploadBackup", "file"): {
        "validation_invalid_mime_type",
        "validation_invalid_archive",
        "validation_backup_name_exists",
        "validation_match_invalid",
        "validation_length_out_of_range",
    },
}
UPLOAD_FAILED = {"上传备份失败。", "Failed to upload the backup."}
# The S3 test of a section that is off (the only kind here, see before_call), and the codes of a
# `filesystem` the schema allows but that names neither section.
S3_NOT_ENABLED = {
    "测试 S3 文件系统失败。S3 存储文件系统未启用。",
    "Failed to test the S3 filesystem. S3 storage filesystem is not enabled.",
}
FILESYSTEM_CODES = {"validation_required", "validation_in_invalid"}
# Settings: what the schema allows and PocketBase's rules still refuse (src/settings.rs,
# `FieldProblem`), by section and field; errors nest under their section ("*": any index).
# A string may not be a cron; a cron needs a cronMaxKeep of at least 1; a superuserIPs entry is an
# address or range; SMTP on needs a host and port; the sender is always required.
SETTINGS_CODES = {
    ("backups", "cron"): {"validation_invalid_cron"},
    ("backups", "cronMaxKeep"): {"validation_required", "validation_min_greater_equal_than_required"},
    ("superuserIPs", "*"): {"validation_required", "validation_invlaid_ip_or_subnet"},
    ("smtp", "host"): {"validation_required", "validation_is_host"},
    ("smtp", "port"): {
        "validation_required",
        "validation_min_greater_equal_than_required",
        "validation_max_less_equal_than_required",
    },
    ("smtp", "authMethod"): {"validation_in_invalid"},
    ("smtp", "localName"): {"validation_is_host"},
    ("meta", "senderName"): {"validation_required"},
    ("meta", "senderAddress"): {"validation_required", "validation_is_email"},
}
# Operations that `documented_rejection` watches (positive_data_acceptance is off for them).
WATCHED = {"listBackups", "createBackup", "uploadBackup", "deleteBackup", "restoreBackup", "verifyBackup", "updateSettings", "testS3"}


def _has_control_char(text):
    return any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in text)


def _allowed_400(op_id, body, case):
    """Why this 400 is a documented answer to a schema-valid request, or None."""
    if not isinstance(body, dict) or body.get("status") != 400:
        return None
    message, data = body.get("message"), body.get("data")
    if not isinstance(data, dict):
        return None
    if not data:
        if op_id == "createBackup" and message in BUSY_CREATE:
            return "busy"
        # A verify is refused while a restore runs (the server is about to restart).
        if op_id in ("deleteBackup", "restoreBackup", "verifyBackup") and message in BUSY:
            return "busy"
        if op_id == "restoreBackup" and message in ARCHIVE_REFUSED:
            return "archive refused"
        if op_id == "testS3" and message in S3_NOT_ENABLED:
            return "S3 not enabled"
        # An extra form field whose name holds a control character cannot be written into a
        # part header: schemathesis then sends a malformed multipart body, rightly refused.
        if op_id == "uploadBackup" and message in UPLOAD_FAILED and isinstance(case.body, dict):
            if any(_has_control_char(str(k)) for k in case.body):
                return "malformed multipart body"
        return None
    if op_id == "updateSettings":
        def documented(section, field, error):
            codes = SETTINGS_CODES.get((section, field)) or SETTINGS_CODES.get((section, "*"), set())
            return isinstance(error, dict) and error.get("code") in codes

        if data and all(
            isinstance(fields, dict) and fields and all(documented(section, f, e) for f, e in fields.items())
            for section, fields in data.items()
        ):
            return "invalid settings"
        return None
    if op_id == "testS3":
        error = data.get("filesystem")
        if set(data) == {"filesystem"} and isinstance(error, dict) and error.get("code") in FILESYSTEM_CODES:
            return error["code"]
        return None
    if len(data) == 1:
        (field, error), = data.items()
        codes = FIELD_CODES.get((op_id, field), set())
        if isinstance(error, dict) and error.get("code") in codes:
            return error["code"]
    return None


@schemathesis.check
def documented_rejection(ctx, response, case):
    """A schema-valid request is accepted, or refused only for a documented reason."""
    op_id = case.operation.definition.raw.get("operationId")
    meta = case.meta
    if op_id not in WATCHED or meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if 200 <= status < 300 or status in (401, 403, 404) or status >= 500:
        return None  # 5xx: not_a_server_error reports it
    try:
        body = response.json()
    except Exception:
        body = None
    if status == 400 and _allowed_400(op_id, body, case):
        return None
    raise AssertionError(
        f"Schema-valid request refused without a documented reason: {status} {response.text[:300]}"
    )


def _small_zip():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("hello.txt", "not a data dir, but a zip\n")
    return buf.getvalue()


SMALL_ZIP = _small_zip()


@schemathesis.hook("map_body").apply_to(operation_id="uploadBackup")
def upload_some_real_zips(ctx, body):
    # At generation time, so schemathesis still classifies the case by what it sends.
    if not isinstance(body, dict) or not isinstance(body.get("file"), Binary):
        return body
    # Deterministic per input, so that a failure replays the same way.
    if zlib.crc32(body["file"].data) % 2 == 0:
        return {**body, "file": Binary(SMALL_ZIP)}
    return body


@schemathesis.hook
def before_call(ctx, case, kwargs):
    # See the module's note: a valid generated bucket would point the server elsewhere. Here,
    # before each call of every phase, rather than in `map_body`, which not all phases use.
    if case.operation.definition.raw.get("operationId") != "updateSettings" or not isinstance(case.body, dict):
        return
    body = {k: v for k, v in case.body.items() if k != "s3"}
    if isinstance(body.get("backups"), dict):
        body["backups"] = {k: v for k, v in body["backups"].items() if k != "s3"}
    case.body = body
