// Drives a running server through every backups call with the official
// PocketBase JS SDK, the way an existing PocketBase client would use it.
// Expectations follow our spec (the numbered rules in spec/src/rules.rs; R30:
// the spec wins), not upstream's quirks.
//
// Env: PB_URL, PB_SUPERUSER_EMAIL, PB_SUPERUSER_PASSWORD, PB_USER_EMAIL,
// PB_USER_PASSWORD (a regular `users` account); optional PB_RESTORE_DEADLINE_MS.
// Run with ./run.sh (or `node --test backups.test.mjs`).

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import PocketBase, { ClientResponseError } from "pocketbase";

const REQUIRED_ENV = [
  "PB_URL",
  "PB_SUPERUSER_EMAIL",
  "PB_SUPERUSER_PASSWORD",
  "PB_USER_EMAIL",
  "PB_USER_PASSWORD",
];
const env = process.env;
const RESTORE_DEADLINE_MS = Number(env.PB_RESTORE_DEADLINE_MS ?? 60_000);
// Between polls only; every wait is bounded by a deadline.
const POLL_INTERVAL_MS = 50;

const CREATED_KEY = "sdk_test_1.zip";
// Created after the restore: its acceptance proves the restore has finished.
const AFTER_RESTORE_KEY = "sdk_test_2.zip";
const UPLOADED_KEY = "sdk_uploaded.zip";
const MISSING_KEY = "sdk_never_created.zip";
const OWN_KEYS = [CREATED_KEY, AFTER_RESTORE_KEY, UPLOADED_KEY];

const MODIFIED_FORMAT = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$/;
const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04]; // "PK\x03\x04"

/** A client that never cancels its own overlapping requests. */
function newClient() {
  return new PocketBase(env.PB_URL).autoCancellation(false);
}

async function superuserClient() {
  const pb = newClient();
  await pb.collection("_superusers").authWithPassword(
    env.PB_SUPERUSER_EMAIL,
    env.PB_SUPERUSER_PASSWORD,
  );
  return pb;
}

async function listKeys(pb) {
  const list = await pb.backups.getFullList();
  return list.map((b) => b.key);
}

/** Asserts that `promise` rejects with a ClientResponseError of `status`; returns it. */
async function rejectsWithStatus(promise, status) {
  let error;
  await assert.rejects(promise, (e) => {
    error = e;
    return true;
  });
  assert.ok(error instanceof ClientResponseError, `not a ClientResponseError: ${error}`);
  assert.equal(error.status, status, `status ${error.status}, body ${JSON.stringify(error.response)}`);
  assert.equal(error.response.status, status, "body `status` matches the HTTP status");
  assert.equal(typeof error.response.message, "string");
  return error;
}

function isBusy(error) {
  // Busy answers carry no field errors; validation errors do.
  return (
    error instanceof ClientResponseError &&
    error.status === 400 &&
    Object.keys(error.response?.data ?? {}).length === 0
  );
}

function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls GET /api/health until it answers 200 or the deadline passes. */
async function waitUntilHealthy(deadline) {
  const pb = newClient();
  let last;
  while (Date.now() < deadline) {
    try {
      const health = await pb.health.check({
        signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())),
      });
      if (health?.code === 200) return;
      last = health;
    } catch (e) {
      // Refused or reset connections while the server restarts.
      last = e;
    }
    await pause(POLL_INTERVAL_MS);
  }
  assert.fail(`server not healthy before the deadline; last answer: ${last}`);
}

describe("backups through the PocketBase JS SDK", () => {
  let pb; // superuser client
  let initialKeys = [];
  let downloaded; // Uint8Array of CREATED_KEY

  before(async () => {
    const missing = REQUIRED_ENV.filter((name) => !env[name]);
    if (missing.length > 0) {
      throw new Error(`missing env: ${missing.join(", ")}`);
    }
  });

  after(async () => {
    // Step 9: remove whatever this run created, even after a failure.
    if (REQUIRED_ENV.some((name) => !env[name])) return;
    const client = await superuserClient();
    const present = await listKeys(client);
    for (const key of OWN_KEYS.filter((k) => present.includes(k))) {
      await client.backups.delete(key);
    }
    assert.deepEqual(
      (await listKeys(client)).filter((k) => OWN_KEYS.includes(k)),
      [],
      "own backups left behind",
    );
  });

  it("1. authenticates as a superuser with a password", async () => {
    pb = await superuserClient();
    assert.ok(pb.authStore.isValid);
    // The SDK (and apps built on it) decide "superuser" from the returned record.
    assert.ok(pb.authStore.isSuperuser, "record.collectionName should be _superusers");
    assert.equal(typeof pb.authStore.token, "string");
    assert.equal(pb.authStore.record?.email, env.PB_SUPERUSER_EMAIL);
  });

  it("2. lists the existing backups", async () => {
    const list = await pb.backups.getFullList();
    assert.ok(Array.isArray(list));
    for (const b of list) {
      assert.deepEqual(Object.keys(b).sort(), ["key", "modified", "size"]);
    }
    // Leftovers of an interrupted earlier run would make the create below fail.
    for (const key of OWN_KEYS.filter((k) => list.some((b) => b.key === k))) {
      await pb.backups.delete(key);
    }
    initialKeys = await listKeys(pb);
  });

  it("3. creates a named backup that then shows in the list", async () => {
    assert.equal(await pb.backups.create(CREATED_KEY), true);
    const list = await pb.backups.getFullList();
    const entry = list.find((b) => b.key === CREATED_KEY);
    assert.ok(entry, `${CREATED_KEY} not listed: ${JSON.stringify(list)}`);
    assert.equal(typeof entry.size, "number");
    assert.ok(entry.size > 0);
    assert.match(entry.modified, MODIFIED_FORMAT);
    assert.deepEqual(
      list.map((b) => b.key).filter((k) => k !== CREATED_KEY).sort(),
      [...initialKeys].sort(),
      "no other backup appeared or vanished",
    );
  });

  it("4. downloads it with a file token", async () => {
    const token = await pb.files.getToken();
    assert.ok(token);
    const url = pb.backups.getDownloadURL(token, CREATED_KEY);
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/zip\b/);
    const disposition = res.headers.get("content-disposition") ?? "";
    assert.match(disposition, /^attachment\b/);
    assert.ok(disposition.includes(CREATED_KEY), `disposition: ${disposition}`);
    downloaded = new Uint8Array(await res.arrayBuffer());
    assert.deepEqual([...downloaded.subarray(0, 4)], ZIP_MAGIC);
    const entry = (await pb.backups.getFullList()).find((b) => b.key === CREATED_KEY);
    assert.equal(downloaded.length, entry.size, "body length equals the listed size");
  });

  it("5a. uploads the downloaded zip under a new name", async () => {
    assert.ok(downloaded, "needs the download of step 4");
    const file = new File([downloaded], UPLOADED_KEY, { type: "application/zip" });
    assert.equal(await pb.backups.upload({ file }), true);
    const entry = (await pb.backups.getFullList()).find((b) => b.key === UPLOADED_KEY);
    assert.ok(entry, `${UPLOADED_KEY} not listed`);
    assert.equal(entry.size, downloaded.length);
    assert.match(entry.modified, MODIFIED_FORMAT);
  });

  it("5b. rejects an upload that is not a zip", async () => {
    const key = "sdk_not_a_zip.zip";
    const file = new File(["plain text, not an archive\n"], key, { type: "application/zip" });
    const error = await rejectsWithStatus(pb.backups.upload({ file }), 400);
    assert.equal(error.response.data?.file?.code, "validation_invalid_mime_type");
    assert.equal(typeof error.response.data.file.message, "string");
    assert.ok(!(await listKeys(pb)).includes(key), "rejected upload must not be listed");
  });

  it("6a. deletes the uploaded backup", async () => {
    assert.equal(await pb.backups.delete(UPLOADED_KEY), true);
    assert.ok(!(await listKeys(pb)).includes(UPLOADED_KEY));
  });

  it("6b. answers 404 when deleting a backup that does not exist", async () => {
    await rejectsWithStatus(pb.backups.delete(MISSING_KEY), 404);
  });

  it("7a. refuses a regular user's token with 403", async () => {
    const user = newClient();
    await user.collection("users").authWithPassword(env.PB_USER_EMAIL, env.PB_USER_PASSWORD);
    assert.ok(!user.authStore.isSuperuser);
    await rejectsWithStatus(user.backups.getFullList(), 403);
  });

  it("7b. refuses a request without a token with 401", async () => {
    await rejectsWithStatus(newClient().backups.getFullList(), 401);
  });

  it("7c. refuses a download without a token with 401", async () => {
    const res = await fetch(pb.backups.getDownloadURL("", CREATED_KEY));
    assert.equal(res.status, 401);
  });

  it("7d. refuses a download with a regular user's file token with 403", async () => {
    const user = newClient();
    await user.collection("users").authWithPassword(env.PB_USER_EMAIL, env.PB_USER_PASSWORD);
    const fileToken = await user.files.getToken();
    const res = await fetch(user.backups.getDownloadURL(fileToken, CREATED_KEY));
    assert.equal(res.status, 403);
  });

  it("8. restores the backup and serves again afterwards", async (t) => {
    const started = Date.now();
    const deadline = started + RESTORE_DEADLINE_MS;
    assert.equal(await pb.backups.restore(CREATED_KEY), true);

    await waitUntilHealthy(deadline);
    pb = await superuserClient();
    assert.ok((await listKeys(pb)).includes(CREATED_KEY), "backups storage survives the restore");

    // The server stays busy until the restarted server serves, so a create is
    // refused until the restore is really over; its acceptance proves it is.
    for (;;) {
      try {
        await pb.backups.create(AFTER_RESTORE_KEY);
        break;
      } catch (e) {
        if (!isBusy(e) || Date.now() >= deadline) throw e;
      }
      await pause(POLL_INTERVAL_MS);
    }
    const keys = await listKeys(pb);
    assert.ok(keys.includes(CREATED_KEY), "restored backup still listed");
    assert.ok(keys.includes(AFTER_RESTORE_KEY));
    t.diagnostic(`restore done and server idle after ${Date.now() - started} ms`);
  });
});
