// The console at /_/ driven in headless Chromium (Debian's, through playwright-core) against
// the real binary, through every action, by the accessible names the page promises. Every
// request the browser makes is recorded: none may go anywhere but the server.
//
// Environment (set by tests/console.rs):
//   PB_URL                 the server, e.g. http://127.0.0.1:PORT
//   PB_DATA_DIR            its data dir (to damage a backup, and to hold a create: see hold())
//   PB_SUPERUSER_EMAIL, PB_SUPERUSER_PASSWORD
//   PB_S3_ENDPOINT, PB_S3_BUCKET  an S3 store (moto, any keys) and an empty bucket there
//   PB_CONSOLE_SCREENSHOT  optional: where to save a screenshot of the page (for the README)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { launchChromium } from "./browser.mjs";

const base = process.env.PB_URL;
const dataDir = process.env.PB_DATA_DIR;
const email = process.env.PB_SUPERUSER_EMAIL;
const password = process.env.PB_SUPERUSER_PASSWORD;
const consoleUrl = `${base}/_/`;
const s3Endpoint = process.env.PB_S3_ENDPOINT;
const s3Bucket = process.env.PB_S3_BUCKET;
// Long enough for a loaded machine; every wait below is a poll that ends as soon as it can.
const WAIT_MS = 60000;

let browser;
let context;
let page;
let scratch;
// The lock holders of hold(), ended in after() whatever happened.
const holders = [];
// Requests to anywhere but the server, and console errors (a CSP violation is one).
const leftServer = [];
const consoleErrors = [];

// ---- helpers ----

async function until(check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

let apiToken;
async function apiCall(method, p, { json, lang = "en" } = {}) {
  const headers = { "Accept-Language": lang };
  if (apiToken) headers.Authorization = apiToken;
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`${base}${p}`, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

async function apiBytes(key) {
  const { body } = await apiCall("POST", "/api/files/token");
  const r = await fetch(`${base}/api/backups/${key}?token=${body.token}`);
  assert.equal(r.status, 200);
  return Buffer.from(await r.arrayBuffer());
}

async function newPage(locale) {
  const ctx = await browser.newContext({ locale, acceptDownloads: true });
  ctx.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(`${base}/`) && !url.startsWith("data:")) leftServer.push(url);
  });
  const p = await ctx.newPage();
  p.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && consoleErrors.push(m.text()));
  p.on("pageerror", (e) => consoleErrors.push(String(e)));
  return { ctx, page: p };
}

const button = (scope, name) => scope.getByRole("button", { name, exact: true });
const row = (key) => page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: key, exact: true }) });
const dialog = () => page.getByRole("dialog");

// The login form: email and password, then, when the collection asks for MFA, the e-mailed
// code (`otp()` gives it; the server side of MFA arrives separately).
async function logIn(p, names, { otp } = {}) {
  await p.getByLabel(names.email, { exact: true }).fill(email);
  await p.getByLabel(names.password, { exact: true }).fill(password);
  await button(p, names.logIn).click();
  if (otp) {
    await p.getByLabel(names.otpCode, { exact: true }).fill(await otp());
    await button(p, names.continue).click();
  }
  await button(p, names.createBackup).waitFor();
}

const EN = { email: "Email", password: "Password", logIn: "Log in", createBackup: "Create backup", otpCode: "One-time code", continue: "Continue" };
const ZH = { email: "邮箱", password: "密码", logIn: "登录", createBackup: "创建备份", otpCode: "一次性验证码", continue: "继续" };

// Holds the next create at the snapshot of `hold.db` (a database in the data dir, in rollback
// journal mode): an exclusive lock makes the snapshot wait for the writer, as it would for
// any writer, until `release()`. The server has no test hook for this.
async function hold() {
  const script = [
    "import sqlite3, sys",
    "c = sqlite3.connect(sys.argv[1], isolation_level=None)",
    "c.execute('BEGIN EXCLUSIVE')",
    "print('held', flush=True)",
    "sys.stdin.read()",
    "c.execute('COMMIT')",
  ].join("\n");
  const holder = spawn("python3", ["-c", script, path.join(dataDir, "hold.db")], { stdio: ["pipe", "pipe", "inherit"] });
  holders.push(holder);
  await new Promise((resolve, reject) => {
    holder.stdout.on("data", (d) => String(d).includes("held") && resolve());
    holder.on("exit", (code) => reject(new Error(`the lock holder exited (${code})`)));
  });
  return { release: () => holder.stdin.end() };
}

// ---- the run ----

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "pb-console-"));
  browser = await launchChromium();
  ({ ctx: context, page } = await newPage("en-US"));
  const login = await apiCall("POST", "/api/collections/_superusers/auth-with-password", { json: { identity: email, password } });
  assert.equal(login.status, 200);
  apiToken = login.body.token;
});

after(async () => {
  for (const holder of holders) holder.kill();
  await browser?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

test("the page is served with a strict CSP, and a wrong password shows the API's message", async () => {
  const response = await page.goto(consoleUrl);
  const csp = response.headers()["content-security-policy"];
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self';/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill("not-the-password");
  await button(page, "Log in").click();
  const refused = await apiCall("POST", "/api/collections/_superusers/auth-with-password", { json: { identity: email, password: "not-the-password" } });
  await until(async () => (await page.getByRole("alert").first().textContent()) === refused.body.message, "the login error");
});

test("log in; the token is kept in sessionStorage", async () => {
  await logIn(page, EN);
  const stored = await page.evaluate(() => Object.keys(sessionStorage).some((k) => sessionStorage.getItem(k)?.split(".").length === 3));
  assert.ok(stored, "a JWT in sessionStorage");
});

test("create with a name: its row shows the size and the date", async () => {
  await button(page, "Create backup").click();
  await dialog().getByLabel("Backup name", { exact: true }).fill("console_a.zip");
  await button(dialog(), "Create").click();
  await row("console_a.zip").waitFor();
  await until(async () => !(await dialog().count()), "the dialog closed");
  const listed = (await apiCall("GET", "/api/backups")).body.find((b) => b.key === "console_a.zip");
  const cells = row("console_a.zip").getByRole("cell");
  assert.match(await cells.nth(0).textContent(), /^\d+(\.\d+)? (B|KB|MB)$/);
  assert.equal(await cells.nth(0).getAttribute("title"), `${listed.size} B`);
  // The date in local time, the UTC time in its title.
  const time = cells.nth(1).locator("time");
  assert.equal(await time.getAttribute("title"), `${listed.modified.replace(/\.\d+Z$/, "")} UTC`);
  assert.ok((await time.textContent()).length > 0);
});

let downloaded;
test("download: the bytes are the API's", async () => {
  const [download] = await Promise.all([page.waitForEvent("download"), button(row("console_a.zip"), "Download").click()]);
  assert.equal(download.suggestedFilename(), "console_a.zip");
  downloaded = await readFile(await download.path());
  assert.ok(downloaded.equals(await apiBytes("console_a.zip")), "downloaded bytes differ from the API's");
});

test("upload a zip from disk, after a confirmation, with its progress", async () => {
  const [chooser] = await Promise.all([page.waitForEvent("filechooser"), button(page, "Upload backup").click()]);
  await chooser.setFiles({ name: "uploaded_copy.zip", mimeType: "application/zip", buffer: downloaded });
  await dialog().getByText("uploaded_copy.zip", { exact: false }).waitFor();
  await button(dialog(), "Upload").click();
  await row("uploaded_copy.zip").waitFor();
  const progressed = await page.locator("#upload-progress").evaluate((p) => p.max >= 1 && p.value === p.max);
  assert.ok(progressed, "the upload's progress reached its end");
  assert.ok((await apiBytes("uploaded_copy.zip")).equals(downloaded));
});

test("verify: OK for a good backup, the API's reason for a corrupted one", async () => {
  // The answer held back while the list re-renders (as a poll's reload may do on a slow machine):
  // the verdict still lands on the row.
  let release;
  const held = new Promise((resolve) => (release = resolve));
  await page.route("**/api/backups/console_a.zip/verify", async (route) => {
    await held;
    await route.continue();
  });
  await button(row("console_a.zip"), "Verify").click();
  await until(async () => (await row("console_a.zip").locator("output").textContent()) === "Checking…", "Checking…");
  await row("console_a.zip").evaluate((r) => (r.dataset.before = "refresh"));
  await button(page, "Refresh").click();
  await until(async () => (await row("console_a.zip").getAttribute("data-before")) === null, "the row rendered anew");
  release();
  await until(async () => (await row("console_a.zip").locator("output").textContent()) === "OK", "OK");
  await page.unroute("**/api/backups/console_a.zip/verify");
  // The good archive with bytes of its data flipped: a zip still, but its checksums fail.
  const damaged = Buffer.from(downloaded);
  for (let i = 200; i < Math.min(damaged.length - 200, 1200); i += 7) damaged[i] ^= 0x5a;
  await writeFile(path.join(dataDir, "backups", "corrupt.zip"), damaged);
  await button(page, "Refresh").click();
  await button(row("corrupt.zip"), "Verify").click();
  const expected = await apiCall("POST", "/api/backups/corrupt.zip/verify");
  assert.equal(expected.body.ok, false);
  await until(async () => (await row("corrupt.zip").locator("output").textContent()) === expected.body.reason, "the reason");
});

test("delete, with a confirmation", async () => {
  await button(row("uploaded_copy.zip"), "Delete").click();
  await button(dialog(), "Delete").click();
  await until(async () => (await row("uploaded_copy.zip").count()) === 0, "the row gone");
  const keys = (await apiCall("GET", "/api/backups")).body.map((b) => b.key);
  assert.ok(!keys.includes("uploaded_copy.zip"));
});

test("save the schedule; a bad cron is refused with the API's message", async () => {
  await page.getByLabel("Presets", { exact: true }).selectOption("0 0 * * *");
  assert.equal(await page.getByLabel("Cron expression", { exact: true }).inputValue(), "0 0 * * *");
  await page.getByLabel("Max @auto backups to keep", { exact: true }).fill("2");
  await button(page, "Save").click();
  await until(async () => (await page.locator("#settings-result").textContent()) === "Saved.", "saved");
  const saved = (await apiCall("GET", "/api/settings")).body.backups;
  assert.deepEqual([saved.cron, saved.cronMaxKeep], ["0 0 * * *", 2]);

  await page.getByLabel("Cron expression", { exact: true }).fill("61 * * * *");
  await button(page, "Save").click();
  // What the API answers to the same request (refused: it changes nothing).
  const refused = await apiCall("PATCH", "/api/settings", { json: { backups: { cron: "61 * * * *", cronMaxKeep: 2 } } });
  assert.equal(refused.status, 400);
  const shown = await until(async () => {
    const text = await page.locator("#settings-result").textContent();
    return text.includes(refused.body.message) && text.includes(refused.body.data.backups.cron.message) && text;
  }, "the API's message");
  assert.ok(shown);
  assert.equal((await apiCall("GET", "/api/settings")).body.backups.cron, "0 0 * * *");
  await page.getByLabel("Cron expression", { exact: true }).fill("0 3 * * *");
  await button(page, "Save").click();
  await until(async () => (await page.locator("#settings-result").textContent()) === "Saved.", "saved again");
  assert.equal((await apiCall("GET", "/api/settings")).body.backups.cron, "0 3 * * *");
});

test("S3: saved from the fields, tested with the API's words, backups go to the bucket, and back", async () => {
  const field = (name) => page.getByLabel(name, { exact: true });
  const result = page.locator("#s3-result");
  const saved = async (what) => {
    await button(page, "Save").click();
    await until(async () => (await page.locator("#settings-result").textContent()) === "Saved.", what);
  };
  await field("Endpoint").waitFor();
  // Not enabled yet: the test answers with the API's words.
  const off = await apiCall("POST", "/api/settings/test/s3", { json: { filesystem: "backups" } });
  assert.equal(off.status, 400);
  await button(page, "Test connection").click();
  await until(async () => (await result.textContent()) === off.body.message, "the API's not-enabled message");

  await field("Use S3 storage").check();
  await field("Endpoint").fill(s3Endpoint);
  await field("Bucket").fill(s3Bucket);
  await field("Region").fill("us-east-1");
  await field("Access key").fill("test");
  await field("Secret").fill("test");
  await field("Force path-style addressing").check();
  await saved("S3 saved");
  const s3 = (await apiCall("GET", "/api/settings")).body.backups.s3;
  assert.deepEqual(s3, { enabled: true, bucket: s3Bucket, region: "us-east-1", endpoint: s3Endpoint, accessKey: "test", forcePathStyle: true });
  assert.equal(await field("Secret").inputValue(), "", "the secret is never shown");
  await button(page, "Test connection").click();
  await until(async () => (await result.textContent()) === "Connection OK.", "the connection works");

  // The list is the bucket's now (empty), and a create lands there, not in the data dir.
  await until(async () => (await row("console_a.zip").count()) === 0, "the bucket's list");
  await button(page, "Create backup").click();
  await dialog().getByLabel("Backup name", { exact: true }).fill("in_the_bucket.zip");
  await button(dialog(), "Create").click();
  await row("in_the_bucket.zip").waitFor();
  await assert.rejects(readFile(path.join(dataDir, "backups", "in_the_bucket.zip")));

  // A bucket that does not exist, the secret left empty (kept): the API's words again.
  await field("Bucket").fill("no-such-bucket");
  await saved("the other bucket saved");
  const missing = await apiCall("POST", "/api/settings/test/s3", { json: { filesystem: "backups" } });
  assert.equal(missing.status, 400);
  await result.evaluate((r) => { r.textContent = ""; });
  await button(page, "Test connection").click();
  await until(async () => (await result.textContent()) === missing.body.message, "the API's no-bucket message");

  // Off again: the data dir's folder, as the tests below expect.
  await field("Bucket").fill(s3Bucket);
  await field("Use S3 storage").uncheck();
  await saved("S3 off");
  await row("console_a.zip").waitFor();
  assert.equal((await apiCall("GET", "/api/settings")).body.backups.s3.enabled, false);
});

test("every action is reachable by keyboard", async () => {
  await page.locator("body").focus();
  const reached = new Set();
  for (let i = 0; i < 120; i++) {
    await page.keyboard.press("Tab");
    reached.add(await page.evaluate(() => {
      const el = document.activeElement;
      return (el.labels?.[0]?.textContent || el.textContent || "").trim();
    }));
  }
  for (const name of ["Create backup", "Upload backup", "Download", "Restore", "Delete", "Verify", "Cron expression", "Max @auto backups to keep", "Save"]) {
    assert.ok(reached.has(name), `${name} is not reachable with Tab: ${[...reached].join(" | ")}`);
  }
  // A create with the keyboard alone.
  await button(page, "Create backup").focus();
  await page.keyboard.press("Enter");
  await page.keyboard.type("keyboard_made.zip");
  await page.keyboard.press("Enter");
  await row("keyboard_made.zip").waitFor();
});

test("while a create runs, create and restore are disabled and its progress is shown", async () => {
  const gate = await hold();
  // Started by another client: the page learns of it from /api/health, as PocketBase's does.
  const creating = apiCall("POST", "/api/backups", { json: { name: "held_backup.zip" } });
  try {
    await whileHeld();
  } finally {
    gate.release();
  }
  assert.equal((await creating).status, 204);
  await until(async () => await button(page, "Create backup").isEnabled(), "Create backup enabled again");
  await row("held_backup.zip").waitFor();
  assert.ok(await button(row("console_a.zip"), "Restore").isEnabled());
});

// What the page shows while the create is held.
async function whileHeld() {
  await until(async () => await button(page, "Create backup").isDisabled(), "Create backup disabled");
  await until(async () => (await page.locator("#work-text").textContent()).includes("Creating held_backup.zip"), "the progress");
  assert.ok(await page.locator("#work-progress").evaluate((p) => p.max > 1), "a byte total");
  for (const key of ["console_a.zip", "corrupt.zip"]) {
    assert.ok(await button(row(key), "Restore").isDisabled(), `Restore of ${key} disabled`);
    assert.ok(await button(row(key), "Verify").isEnabled());
  }
  // Uploads go on during a create (the spec's exclusivity is about creates and restores).
  assert.ok(await button(page, "Upload backup").isEnabled());
  if (process.env.PB_CONSOLE_SCREENSHOT) await page.screenshot({ path: process.env.PB_CONSOLE_SCREENSHOT, fullPage: true });
}

test("restore: the typed name is required; the page waits for the restarted server and shows the restored data", async () => {
  // console_a.zip was made before the schedule was saved.
  await button(row("console_a.zip"), "Restore").click();
  const confirm = button(dialog(), "Restore");
  assert.ok(await confirm.isDisabled());
  await dialog().getByLabel("Type the backup name to confirm", { exact: true }).fill("console_a");
  assert.ok(await confirm.isDisabled(), "a wrong name does not enable it");
  await dialog().getByLabel("Type the backup name to confirm", { exact: true }).fill("console_a.zip");
  assert.ok(await confirm.isEnabled());
  await confirm.click();
  await until(async () => !(await dialog().count()), "the restore's dialog closed", 120000);
  await until(async () => (await page.getByLabel("Cron expression", { exact: true }).inputValue()) === "", "the restored schedule");
  assert.equal((await apiCall("GET", "/api/settings")).body.backups.cron, "");
  // The backups survive a restore; the list was loaded again from the restarted server.
  await row("held_backup.zip").waitFor();
});

test("the same in Chinese: a refused name in the API's words, then a create and its verify", async () => {
  const zh = await newPage("zh-CN");
  page = zh.page;
  await page.goto(consoleUrl);
  await page.getByRole("heading", { name: "备份", exact: true }).waitFor();
  await logIn(page, ZH);
  await button(page, "创建备份").click();
  await dialog().getByLabel("备份名称", { exact: true }).fill("Bad Name.zip");
  await button(dialog(), "创建").click();
  const refused = await apiCall("POST", "/api/backups", { json: { name: "Bad Name.zip" }, lang: "zh" });
  assert.equal(refused.status, 400);
  await until(async () => {
    const text = await dialog().getByRole("alert").textContent();
    return text.includes(refused.body.message) && text.includes(refused.body.data.name.message);
  }, "the API's Chinese message");
  await dialog().getByLabel("备份名称", { exact: true }).fill("zh_backup.zip");
  await button(dialog(), "创建").click();
  await row("zh_backup.zip").waitFor();
  await button(row("zh_backup.zip"), "校验").click();
  await until(async () => (await row("zh_backup.zip").locator("output").textContent()) === "OK", "OK");
  // The switch: English from then on.
  await button(page, "English").click();
  await button(page, "Create backup").waitFor();
  await zh.ctx.close();
});

test("no request left the server, and the page broke no rule of its CSP", async () => {
  assert.deepEqual(leftServer, []);
  assert.deepEqual(consoleErrors, []);
  await context.close();
});
