// The operators' console: backups through the public API only, with the calls the official
// JS SDK makes (so it is also a worked example of the API). No framework: the markup is in
// index.html, this file fills it in and wires it up.

import { TEXTS, initialLang } from "./i18n.js";

const $ = (selector, root = document) => root.querySelector(selector);
const TOKEN_KEY = "pb_backups_console_token";
const LANG_KEY = "pb_backups_console_lang";
// Health is asked this often (PocketBase's page polls it too), faster while work runs.
const POLL_IDLE_MS = 3000;
const POLL_BUSY_MS = 500;
// How long a restart after a restore may take before the page gives up waiting.
const RESTART_WAIT_MS = 120000;

const state = {
  lang: initialLang(localStorage.getItem(LANG_KEY), navigator.languages || [navigator.language]),
  token: sessionStorage.getItem(TOKEN_KEY),
  email: "",
  mfaId: null,
  otpId: null,
  backups: [],
  // Verify verdicts by key: a list re-rendered while a verify runs keeps its answer.
  verdicts: new Map(),
  canBackup: true,
  progress: null,
  // Requests of ours that keep the server busy (a create or restore awaiting its answer).
  working: 0,
  pollTimer: null,
  settings: null,
};

// ---- texts ----

function t(key, vars = {}) {
  let text = key.split(".").reduce((o, k) => (o ? o[k] : undefined), TEXTS[state.lang]) ?? key;
  for (const [name, value] of Object.entries(vars)) text = text.replaceAll(`{${name}}`, value);
  return text;
}

function applyTexts(root = document) {
  for (const el of root.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
}

function setLang(lang) {
  state.lang = lang;
  localStorage.setItem(LANG_KEY, lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  const other = lang === "zh" ? "en" : "zh";
  const sw = $("#lang-switch");
  sw.textContent = t("switchTo");
  sw.lang = other;
  applyTexts();
  document.title = `${t("title")} · pb-backups`;
  renderRows();
  renderWork();
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, body) {
    super(apiMessage(body) || t("network"));
    this.status = status;
    this.body = body;
  }
}

// The API's words: its message, then those of each refused field (`data.x.message`, at any
// depth, as settings nest them under their section).
function apiMessage(body) {
  if (!body || typeof body !== "object") return "";
  const fields = [];
  const walk = (value) => {
    if (!value || typeof value !== "object") return;
    if (typeof value.message === "string" && typeof value.code === "string") fields.push(value.message);
    else Object.values(value).forEach(walk);
  };
  walk(body.data);
  return [body.message, ...fields].filter(Boolean).join(" ");
}

async function api(method, path, { json, body, auth = true } = {}) {
  const headers = { "Accept-Language": state.lang };
  if (auth && state.token) headers.Authorization = state.token;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch {
    throw new ApiError(0, null);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && auth && state.token) sessionEnded();
    throw new ApiError(response.status, data);
  }
  return data;
}

const keyPath = (key) => `/api/backups/${encodeURIComponent(key)}`;

// ---- formatting ----

function humanSize(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

// `modified` is `2023-05-19 16:25:57.542Z` (UTC).
function parseModified(modified) {
  return new Date(modified.replace(" ", "T"));
}

// ---- views ----

function show(view) {
  $("#login-view").hidden = view !== "login";
  $("#main-view").hidden = view !== "main";
  $("#logout").hidden = view !== "main";
}

function showLogin(message = "") {
  stopPolling();
  show("login");
  $("#login-form").hidden = false;
  $("#otp-form").hidden = true;
  $("#login-error").textContent = message;
  $("#email").focus();
}

function sessionEnded() {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  showLogin(t("sessionEnded"));
}

async function enter() {
  show("main");
  $("#who").textContent = state.email;
  await Promise.all([loadBackups(), loadSettings(), poll()]);
}

// ---- log in (password, then the e-mailed code when the collection asks for MFA) ----

async function loggedIn(auth) {
  if (auth.record?.collectionName && auth.record.collectionName !== "_superusers") {
    showLogin(t("notSuperuser"));
    return;
  }
  state.token = auth.token;
  state.email = auth.record?.email || "";
  sessionStorage.setItem(TOKEN_KEY, state.token);
  sessionStorage.setItem(`${TOKEN_KEY}_email`, state.email);
  $("#password").value = "";
  $("#otp").value = "";
  await enter();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#login-error").textContent = "";
  const identity = $("#email").value.trim();
  const password = $("#password").value;
  try {
    const auth = await api("POST", "/api/collections/_superusers/auth-with-password", {
      json: { identity, password },
      auth: false,
    });
    await loggedIn(auth);
  } catch (e) {
    // An MFA collection answers the first factor with 401 {"mfaId"}: the code comes next.
    if (e.status === 401 && e.body?.mfaId) {
      state.mfaId = e.body.mfaId;
      await requestCode(identity);
      return;
    }
    $("#login-error").textContent = e.message;
  }
});

async function requestCode(email) {
  try {
    const sent = await api("POST", "/api/collections/_superusers/request-otp", { json: { email }, auth: false });
    state.otpId = sent.otpId;
    $("#login-form").hidden = true;
    $("#otp-form").hidden = false;
    $("#otp").focus();
  } catch (e) {
    $("#login-error").textContent = e.message;
  }
}

$("#otp-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    const auth = await api("POST", "/api/collections/_superusers/auth-with-otp", {
      json: { otpId: state.otpId, password: $("#otp").value.trim(), mfaId: state.mfaId },
      auth: false,
    });
    state.mfaId = state.otpId = null;
    await loggedIn(auth);
  } catch (e) {
    $("#login-error").textContent = e.message;
  }
});

$("#logout").addEventListener("click", () => {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});

// ---- the list ----

async function loadBackups() {
  try {
    state.backups = await api("GET", "/api/backups");
    $("#main-error").textContent = "";
  } catch (e) {
    $("#main-error").textContent = e.message;
  }
  renderRows();
}

function renderRows() {
  const rows = $("#rows");
  rows.replaceChildren();
  for (const backup of state.backups) {
    const row = $("#row-template").content.firstElementChild.cloneNode(true);
    row.dataset.key = backup.key;
    $(".key", row).textContent = backup.key;
    $(".size", row).textContent = humanSize(backup.size);
    $(".size", row).title = `${backup.size} B`;
    const when = parseModified(backup.modified);
    const time = $("time", row);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleString(state.lang === "zh" ? "zh-CN" : "en");
    time.title = `${when.toISOString().replace("T", " ").replace(/\.\d+Z$/, "")} UTC`;
    $(".verdict", row).textContent = state.verdicts.get(backup.key) || "";
    applyTexts(row);
    rows.append(row);
  }
  $("#empty").hidden = state.backups.length > 0;
  renderBusy();
}

$("#refresh").addEventListener("click", loadBackups);

$("#rows").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const key = button.closest("tr").dataset.key;
  ({ download, restore: openRestore, delete: openDelete, verify })[button.dataset.action](key, button);
});

// ---- busy state and progress, from /api/health ----

function busy() {
  return !state.canBackup || state.working > 0;
}

function renderBusy() {
  const isBusy = busy();
  $("#create-open").disabled = isBusy;
  const inUse = state.progress?.key;
  for (const row of $("#rows").querySelectorAll("tr")) {
    $('[data-action="restore"]', row).disabled = isBusy;
    // The key being created or restored cannot be deleted meanwhile.
    $('[data-action="delete"]', row).disabled = isBusy && row.dataset.key === inUse;
  }
}

function renderWork() {
  const work = $("#work");
  const p = state.progress;
  if (!p && state.canBackup) {
    work.hidden = true;
    return;
  }
  work.hidden = false;
  const progress = $("#work-progress");
  if (!p) {
    $("#work-text").textContent = t("busy");
    progress.removeAttribute("value");
    return;
  }
  const label = t(`working.${p.action}`, { key: p.key });
  if (p.total > 0) {
    const percent = Math.min(100, Math.floor((p.done * 100) / p.total));
    $("#work-text").textContent = `${label}: ${t("progressOf", { done: humanSize(p.done), total: humanSize(p.total), percent })}`;
    progress.max = p.total;
    progress.value = Math.min(p.done, p.total);
  } else {
    $("#work-text").textContent = `${label}…`;
    progress.removeAttribute("value");
  }
}

async function poll() {
  clearTimeout(state.pollTimer);
  if (!state.token) return;
  const wasBusy = !state.canBackup;
  try {
    const health = await api("GET", "/api/health");
    state.canBackup = health.data?.canBackup !== false;
    state.progress = health.data?.progress || null;
  } catch {
    // A restarting server answers nothing for a moment: asked again below.
  }
  renderBusy();
  renderWork();
  // Work that someone else ran has ended: its backup may be new.
  if (wasBusy && state.canBackup && state.working === 0) loadBackups();
  // One timer at most, even when polls overlap (a create asks at once, besides the timer's).
  clearTimeout(state.pollTimer);
  if (state.token) state.pollTimer = setTimeout(poll, busy() ? POLL_BUSY_MS : POLL_IDLE_MS);
}

function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

// Runs `request` (a create or restore) with the page marked busy and health polled closely.
async function whileWorking(request) {
  state.working += 1;
  renderBusy();
  const polling = poll();
  try {
    return await request();
  } finally {
    state.working -= 1;
    await polling;
    renderBusy();
  }
}

// ---- dialogs ----

function openDialog(id) {
  const dialog = $(id);
  $(".error", dialog).textContent = "";
  dialog.showModal();
  return dialog;
}

for (const dialog of document.querySelectorAll("dialog")) {
  $(".cancel", dialog).addEventListener("click", () => dialog.close());
}

// Runs a dialog's action with its buttons disabled; its error shows in the dialog.
async function inDialog(dialog, action) {
  const buttons = [...dialog.querySelectorAll("button")];
  buttons.forEach((b) => (b.disabled = true));
  $(".error", dialog).textContent = "";
  try {
    await action();
    dialog.close();
  } catch (e) {
    $(".error", dialog).textContent = e.message;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
    if (dialog.id === "restore-dialog") matchRestoreName();
  }
}

// ---- create ----

$("#create-open").addEventListener("click", () => {
  $("#backup-name").value = "";
  openDialog("#create-dialog");
  $("#backup-name").focus();
});

$("#create-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("#backup-name").value.trim();
  inDialog($("#create-dialog"), async () => {
    try {
      await whileWorking(() => api("POST", "/api/backups", { json: name ? { name } : {} }));
    } finally {
      await loadBackups();
    }
  });
});

// ---- upload: a file from disk, confirmed, sent with its progress shown ----

$("#upload-open").addEventListener("click", () => {
  $("#upload-file").value = "";
  $("#upload-file").click();
});

$("#upload-file").addEventListener("change", () => {
  const file = $("#upload-file").files[0];
  if (!file) return;
  $("#upload-what").textContent = t("uploadWhat", { name: file.name, size: humanSize(file.size) });
  $("#upload-progress").hidden = true;
  $("#upload-progress-text").textContent = "";
  openDialog("#upload-dialog");
});

$("#upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  inDialog($("#upload-dialog"), async () => {
    await uploadWithProgress(file);
    await loadBackups();
  });
});

// fetch() cannot report an upload's progress; XMLHttpRequest can.
function uploadWithProgress(file) {
  const bar = $("#upload-progress");
  const text = $("#upload-progress-text");
  bar.hidden = false;
  bar.value = 0;
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/backups/upload");
    xhr.setRequestHeader("Authorization", state.token);
    xhr.setRequestHeader("Accept-Language", state.lang);
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      bar.max = e.total;
      bar.value = e.loaded;
      const percent = Math.floor((e.loaded * 100) / e.total);
      text.textContent = t("uploading", { done: humanSize(e.loaded), total: humanSize(e.total), percent });
    });
    xhr.upload.addEventListener("load", () => (text.textContent = t("checking")));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status === 401) sessionEnded();
      reject(new ApiError(xhr.status, body));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, null)));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

// ---- download: through a short-lived file token, as the SDK's getDownloadURL ----

async function download(key) {
  try {
    const { token } = await api("POST", "/api/files/token");
    const link = document.createElement("a");
    link.href = `${keyPath(key)}?token=${encodeURIComponent(token)}`;
    link.download = key;
    document.body.append(link);
    link.click();
    link.remove();
  } catch (e) {
    $("#main-error").textContent = e.message;
  }
}

// ---- delete ----

let deleting = null;

function openDelete(key) {
  deleting = key;
  $("#delete-what").textContent = t("deleteWhat", { key });
  openDialog("#delete-dialog");
}

$("#delete-form").addEventListener("submit", (event) => {
  event.preventDefault();
  inDialog($("#delete-dialog"), async () => {
    await api("DELETE", keyPath(deleting));
    state.verdicts.delete(deleting);
    await loadBackups();
  });
});

// ---- verify (this server's extension: the restore's checks, nothing changed) ----

async function verify(key, button) {
  // The row may be re-rendered before the answer comes: the verdict goes to whichever row has the key then.
  const show = (text) => {
    state.verdicts.set(key, text);
    const row = [...$("#rows").querySelectorAll("tr")].find((r) => r.dataset.key === key);
    if (row) $(".verdict", row).textContent = text;
  };
  show(t("verifying"));
  button.disabled = true;
  try {
    const result = await api("POST", `${keyPath(key)}/verify`);
    show(result.ok ? t("ok") : result.reason);
  } catch (e) {
    show(e.message);
  } finally {
    button.disabled = false;
  }
}

// ---- restore: the name typed to confirm, then wait for the restarted server ----

let restoring = null;

function matchRestoreName() {
  const submit = $('#restore-form button[type="submit"]');
  submit.disabled = busy() || $("#restore-confirm").value !== restoring;
}

function openRestore(key) {
  restoring = key;
  $("#restore-key").textContent = key;
  $("#restore-confirm").value = "";
  $("#restore-status").textContent = "";
  openDialog("#restore-dialog");
  matchRestoreName();
  $("#restore-confirm").focus();
}

$("#restore-confirm").addEventListener("input", matchRestoreName);

$("#restore-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if ($("#restore-confirm").value !== restoring) return;
  inDialog($("#restore-dialog"), async () => {
    await whileWorking(async () => {
      await api("POST", `${keyPath(restoring)}/restore`);
      $("#restore-status").textContent = t("restarting");
      await untilServing();
    });
    // The data are the backup's now: accounts, settings and all.
    await Promise.all([loadBackups(), loadSettings()]);
  });
});

// The restarted server serves once health answers and no restore holds it any more.
async function untilServing() {
  const deadline = Date.now() + RESTART_WAIT_MS;
  while (Date.now() < deadline) {
    try {
      const health = await api("GET", "/api/health");
      if (health.data?.canBackup !== false) return;
    } catch (e) {
      if (e.status === 401) throw e;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_BUSY_MS));
  }
  throw new Error(t("notBack"));
}

// ---- automatic backups and where they are kept (S3) ----

async function loadSettings() {
  try {
    state.settings = await api("GET", "/api/settings");
  } catch (e) {
    $("#settings-result").textContent = e.message;
    return;
  }
  const backups = state.settings.backups || {};
  $("#cron").value = backups.cron || "";
  $("#max-keep").value = backups.cronMaxKeep ?? "";
  const s3 = backups.s3;
  // Shown only when the server's settings have the section.
  $("#s3-fields").hidden = !s3 || typeof s3 !== "object";
  if (s3 && typeof s3 === "object") {
    $("#s3-enabled").checked = !!s3.enabled;
    $("#s3-endpoint").value = s3.endpoint || "";
    $("#s3-bucket").value = s3.bucket || "";
    $("#s3-region").value = s3.region || "";
    $("#s3-access-key").value = s3.accessKey || "";
    $("#s3-secret").value = "";
    $("#s3-path-style").checked = !!s3.forcePathStyle;
  }
  // The server's flags name a bucket: backups go there whatever these fields say.
  const override = backups.s3Override;
  $("#s3-override").hidden = !override;
  $("#s3-override").textContent = override ? t("s3Override", { bucket: override.bucket }) : "";
}

$("#cron-preset").addEventListener("change", () => {
  if ($("#cron-preset").value) $("#cron").value = $("#cron-preset").value;
  $("#cron-preset").value = "";
  $("#cron").focus();
});

$("#settings-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("#settings-result");
  result.textContent = "";
  const keep = $("#max-keep").value.trim();
  const backups = { cron: $("#cron").value.trim() };
  if (keep !== "") backups.cronMaxKeep = Number(keep);
  if (!$("#s3-fields").hidden) {
    backups.s3 = {
      enabled: $("#s3-enabled").checked,
      endpoint: $("#s3-endpoint").value.trim(),
      bucket: $("#s3-bucket").value.trim(),
      region: $("#s3-region").value.trim(),
      accessKey: $("#s3-access-key").value.trim(),
      forcePathStyle: $("#s3-path-style").checked,
    };
    // Absent keeps the stored secret, as in PocketBase.
    if ($("#s3-secret").value) backups.s3.secret = $("#s3-secret").value;
  }
  const submit = $('#settings-form button[type="submit"]');
  submit.disabled = true;
  try {
    await api("PATCH", "/api/settings", { json: { backups } });
    await loadSettings();
    result.textContent = t("saved");
    // The list is the storage's the settings name now.
    await loadBackups();
  } catch (e) {
    result.textContent = e.message;
  } finally {
    submit.disabled = false;
  }
});

// Tests the saved settings, as PocketBase's endpoint does.
$("#s3-test").addEventListener("click", async () => {
  const result = $("#s3-result");
  result.textContent = "";
  try {
    await api("POST", "/api/settings/test/s3", { json: { filesystem: "backups" } });
    result.textContent = t("connectionOk");
  } catch (e) {
    result.textContent = e.message;
  }
});

// ---- start ----

$("#lang-switch").addEventListener("click", () => setLang(state.lang === "zh" ? "en" : "zh"));
setLang(state.lang);
if (state.token) {
  state.email = sessionStorage.getItem(`${TOKEN_KEY}_email`) || "";
  enter();
} else {
  showLogin();
}
