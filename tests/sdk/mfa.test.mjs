// The MFA flow of the official PocketBase JS SDK, as PocketBase's docs show it, against a
// running server whose superusers need a password and a one-time password:
// `authWithPassword` throws with an `mfaId`, `requestOTP` mails a code, and
// `authWithOTP(otpId, code, { mfaId })` finishes the login.
//
// Env: PB_URL, PB_SUPERUSER_EMAIL, PB_SUPERUSER_PASSWORD, and PB_MAIL_DIR, where the test's
// SMTP sink writes each message as `<n>.eml` (the code sits between `CODE:` and `:END`).
// Run with `node --test mfa.test.mjs` once ./run.sh --install-only has installed the SDK.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import PocketBase, { ClientResponseError } from "pocketbase";

const env = process.env;

function mailCount() {
  return readdirSync(env.PB_MAIL_DIR).filter((f) => f.endsWith(".eml")).length;
}

// The code of the first mail after `before` mails, polled for up to 20 s.
async function codeFromMail(before) {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (mailCount() > before) {
      // Quoted-printable soft line breaks may split the code.
      const raw = readFileSync(join(env.PB_MAIL_DIR, `${before + 1}.eml`), "utf8").replace(/=\r?\n/g, "");
      const found = raw.match(/CODE:(\d+):END/);
      assert.ok(found, `no code in the mail:\n${raw}`);
      return found[1];
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.fail("no mail arrived");
}

async function passwordStep(pb) {
  try {
    await pb.collection("_superusers").authWithPassword(env.PB_SUPERUSER_EMAIL, env.PB_SUPERUSER_PASSWORD);
  } catch (e) {
    assert.ok(e instanceof ClientResponseError, `not a ClientResponseError: ${e}`);
    assert.equal(e.status, 401);
    return e.response.mfaId;
  }
  assert.fail("the password alone logged in");
}

describe("MFA through the PocketBase JS SDK", () => {
  it("password, then a one-time password by mail, gives a superuser session", async () => {
    const pb = new PocketBase(env.PB_URL).autoCancellation(false);
    const mfaId = await passwordStep(pb);
    assert.match(mfaId, /^[a-z0-9]{15}$/);
    assert.equal(pb.authStore.isValid, false);

    const before = mailCount();
    const { otpId } = await pb.collection("_superusers").requestOTP(env.PB_SUPERUSER_EMAIL);
    const code = await codeFromMail(before);
    const auth = await pb.collection("_superusers").authWithOTP(otpId, code, { mfaId });
    assert.equal(auth.record.email, env.PB_SUPERUSER_EMAIL);
    assert.ok(pb.authStore.isValid);
    assert.ok(pb.authStore.isSuperuser);
    assert.ok(Array.isArray(await pb.backups.getFullList()));
  });

  it("a wrong code and a missing second step are refused", async () => {
    const pb = new PocketBase(env.PB_URL).autoCancellation(false);
    const mfaId = await passwordStep(pb);
    const before = mailCount();
    const { otpId } = await pb.collection("_superusers").requestOTP(env.PB_SUPERUSER_EMAIL);
    const code = await codeFromMail(before);
    const wrong = code === "00000000" ? "11111111" : "00000000";
    await assert.rejects(pb.collection("_superusers").authWithOTP(otpId, wrong, { mfaId }), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.response.message, "Invalid or expired OTP.");
      return true;
    });
    // The code alone is a first step too: another mfaId, no session.
    await assert.rejects(pb.collection("_superusers").authWithOTP(otpId, code), (e) => {
      assert.equal(e.status, 401);
      assert.match(e.response.mfaId, /^[a-z0-9]{15}$/);
      return true;
    });
    assert.equal(pb.authStore.isValid, false);
  });
});
