// The console's login when `_superusers` requires MFA, in headless Chromium against the real
// binary: the password answers 401 {mfaId}, the page has a code mailed (request-otp) and asks
// for it, and the code from the mail finishes the login (auth-with-otp with the mfaId). A
// wrong code shows the API's message. No request leaves the server.
//
// Environment (set by tests/console.rs):
//   PB_URL, PB_SUPERUSER_EMAIL, PB_SUPERUSER_PASSWORD
//   PB_MAIL_DIR  where the test's SMTP sink writes each message as `<n>.eml` (the code sits
//                between `CODE:` and `:END`)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { launchChromium } from "./browser.mjs";

const base = process.env.PB_URL;
const email = process.env.PB_SUPERUSER_EMAIL;
const password = process.env.PB_SUPERUSER_PASSWORD;
const mailDir = process.env.PB_MAIL_DIR;
const WAIT_MS = 60000;

let browser;
let page;
const leftServer = [];
const consoleErrors = [];

const mails = () => readdirSync(mailDir).filter((f) => f.endsWith(".eml")).length;

// The code of mail number `n` (1-based), polled until it is there.
async function codeOfMail(n) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      // Quoted-printable soft line breaks may split the code.
      const raw = readFileSync(path.join(mailDir, `${n}.eml`), "utf8").replace(/=\r?\n/g, "");
      const found = raw.match(/CODE:(\d+):END/);
      assert.ok(found, `no code in the mail:\n${raw}`);
      return found[1];
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

const button = (name) => page.getByRole("button", { name, exact: true });

before(async () => {
  browser = await launchChromium();
  const context = await browser.newContext({ locale: "en-US" });
  context.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(`${base}/`) && !url.startsWith("data:")) leftServer.push(url);
  });
  page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
});

after(async () => {
  await browser?.close();
});

test("the password alone does not log in: the page asks for the mailed code", async () => {
  await page.goto(`${base}/_/`);
  const before = mails();
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await button("Log in").click();
  await page.getByLabel("One-time code", { exact: true }).waitFor();
  assert.equal(await button("Create backup").count(), 0, "no backups before the second factor");
  const code = await codeOfMail(before + 1);

  // A wrong code: the API's refusal, in its words, and still no token.
  const wrong = code === "00000000" ? "11111111" : "00000000";
  await page.getByLabel("One-time code", { exact: true }).fill(wrong);
  await button("Continue").click();
  await page.getByRole("alert").first().waitFor();
  const alert = (await page.getByRole("alert").first().textContent()).trim();
  assert.ok(alert.length > 0, "the refusal is shown");
  assert.equal(await button("Create backup").count(), 0, "a wrong code does not log in");

  await page.getByLabel("One-time code", { exact: true }).fill(code);
  await button("Continue").click();
  await button("Create backup").waitFor({ timeout: WAIT_MS });
  const stored = await page.evaluate(() => Object.keys(sessionStorage).some((k) => sessionStorage.getItem(k)?.split(".").length === 3));
  assert.ok(stored, "a JWT in sessionStorage");
  // The token works for the backups API: the list shows (an empty data dir has no rows).
  await page.getByRole("table").waitFor();
});

test("no request left the server, and the page broke no rule of its CSP", () => {
  assert.deepEqual(leftServer, []);
  assert.deepEqual(consoleErrors, []);
});
