// The settings calls of the official PocketBase JS SDK against a running server:
// `pb.settings.getAll()`, `pb.settings.update({backups: {...}})` and `pb.settings.testS3()`.
//
// Env: PB_URL, PB_SUPERUSER_EMAIL, PB_SUPERUSER_PASSWORD, PB_USER_EMAIL, PB_USER_PASSWORD.
// Run with `node --test settings.test.mjs` once ./run.sh --install-only has installed the SDK.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import PocketBase, { ClientResponseError } from "pocketbase";

const env = process.env;

async function login(collection, email, password) {
  const pb = new PocketBase(env.PB_URL).autoCancellation(false);
  await pb.collection(collection).authWithPassword(email, password);
  return pb;
}

async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ClientResponseError, `not a ClientResponseError: ${e}`);
    return e;
  }
  assert.fail("expected the call to be refused");
}

describe("settings through the PocketBase JS SDK", () => {
  it("reads and updates the backups schedule", async () => {
    const pb = await login("_superusers", env.PB_SUPERUSER_EMAIL, env.PB_SUPERUSER_PASSWORD);
    const initial = await pb.settings.getAll();
    assert.equal(typeof initial.backups.cron, "string");
    assert.equal(typeof initial.backups.cronMaxKeep, "number");
    assert.equal(typeof initial.meta.appName, "string");

    const schedule = (backups) => [backups.cron, backups.cronMaxKeep];
    const updated = await pb.settings.update({ backups: { cron: "0 */6 * * *", cronMaxKeep: 4 } });
    assert.deepEqual(schedule(updated.backups), ["0 */6 * * *", 4]);
    assert.deepEqual(schedule((await pb.settings.getAll()).backups), ["0 */6 * * *", 4]);
    assert.deepEqual(updated.backups.s3, initial.backups.s3, "backups.s3 is left as it was");

    const partial = await pb.settings.update({ backups: { cronMaxKeep: 2 } });
    assert.deepEqual(schedule(partial.backups), ["0 */6 * * *", 2]);
  });

  it("keeps backups.s3 and tests it as PocketBase does", async () => {
    const pb = await login("_superusers", env.PB_SUPERUSER_EMAIL, env.PB_SUPERUSER_PASSWORD);
    const e = await rejection(pb.settings.update({ backups: { s3: { enabled: true, bucket: "" } } }));
    assert.equal(e.status, 400);
    assert.equal(e.response.data.backups.s3.bucket.code, "validation_required");
    const saved = await pb.settings.update({ backups: { s3: { bucket: "kept", secret: "not-served" } } });
    assert.equal(saved.backups.s3.bucket, "kept");
    assert.equal(saved.backups.s3.enabled, false);
    assert.ok(!("secret" in saved.backups.s3), "the secret is never served");
    const notEnabled = await rejection(pb.settings.testS3("backups"));
    assert.equal(notEnabled.status, 400);
    assert.match(notEnabled.response.message, /not enabled|未启用/);
  });

  it("refuses an invalid schedule with PocketBase's validation shape", async () => {
    const pb = await login("_superusers", env.PB_SUPERUSER_EMAIL, env.PB_SUPERUSER_PASSWORD);
    const before = await pb.settings.getAll();
    const e = await rejection(pb.settings.update({ backups: { cron: "not a cron", cronMaxKeep: 0 } }));
    assert.equal(e.status, 400);
    assert.equal(e.response.data.backups.cron.code, "validation_invalid_cron");
    assert.equal(e.response.data.backups.cronMaxKeep.code, "validation_required");
    assert.deepEqual((await pb.settings.getAll()).backups, before.backups);
  });

  it("is for superusers only", async () => {
    const anonymous = new PocketBase(env.PB_URL).autoCancellation(false);
    assert.equal((await rejection(anonymous.settings.getAll())).status, 401);
    const user = await login("users", env.PB_USER_EMAIL, env.PB_USER_PASSWORD);
    assert.equal((await rejection(user.settings.getAll())).status, 403);
    assert.equal((await rejection(user.settings.update({ backups: { cron: "" } }))).status, 403);
  });
});
