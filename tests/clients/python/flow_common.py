"""What both Python flows share: the live server's settings and the wait for a restore."""

import os
import time


def env(name):
    value = os.environ.get(name)
    assert value, f"{name} must be set"
    return value


URL = env("PB_URL")
EMAIL = env("PB_EMAIL")
PASSWORD = env("PB_PASSWORD")
PREFIX = env("PB_PREFIX")


def until_restored(try_create, connection_errors):
    """Polls `try_create()` (True once a create is accepted, False while the server is busy
    restoring) until the restarted server accepts one; a connection that the restart closed is
    retried."""
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the server did not finish the restore within 60 s"
        try:
            if try_create():
                return
        except connection_errors:
            pass
        time.sleep(0.1)


def check_error(error, http_status, status_code):
    """A documented error, read as the generated Error model."""
    assert status_code == http_status, (status_code, http_status)
    assert error.status == http_status, error
    assert error.message, error
    return error
