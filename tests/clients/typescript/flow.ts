// The whole flow through a client generated with openapi-typescript + openapi-fetch, against
// the live server at PB_URL (scripts/generated-clients starts it and sets the PB_* variables).
import assert from "node:assert/strict";
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/schema.js";

type ApiError = components["schemas"]["Error"];

const env = (name: string): string => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set`);
  return value;
};
const baseUrl = env("PB_URL");
const prefix = env("PB_PREFIX");
const client = createClient<paths>({ baseUrl });

/** A documented error, read as the generated Error model. */
function expectError(error: ApiError | undefined, response: Response, status: number): ApiError {
  assert.equal(response.status, status);
  assert.ok(error, `an error body with ${status}`);
  assert.equal(error.status, status);
  assert.ok(error.message.length > 0);
  return error;
}

// Health (public) and login.
const health = await client.GET("/api/health");
assert.equal(health.data?.code, 200);

const wrong = await client.POST("/api/collections/{collection}/auth-with-password", {
  params: { path: { collection: "_superusers" } },
  body: { identity: env("PB_EMAIL"), password: "not the password" },
});
// A login's error may also be the 401 that asks for a second factor ({mfaId}); not here.
assert.ok(!(wrong.error && "mfaId" in wrong.error), "no second factor asked for");
expectError(wrong.error && "mfaId" in wrong.error ? undefined : wrong.error, wrong.response, 400);

const login = await client.POST("/api/collections/{collection}/auth-with-password", {
  params: { path: { collection: "_superusers" } },
  body: { identity: env("PB_EMAIL"), password: env("PB_PASSWORD") },
});
assert.ok(login.data, `login: ${login.response.status}`);
const headers = { Authorization: `Bearer ${login.data.token}` };

// Create, then the same name again: the documented 400 with the field's code.
const name = `${prefix}-flow.zip`;
const created = await client.POST("/api/backups", { headers, body: { name } });
assert.equal(created.response.status, 204);
const again = await client.POST("/api/backups", { headers, body: { name } });
assert.equal(expectError(again.error, again.response, 400).data["name"]?.code, "validation_backup_name_exists");

// List.
const listed = await client.GET("/api/backups", { headers });
assert.ok(listed.data);
const entry = listed.data.find((b) => b.key === name);
assert.ok(entry?.size, `${name} listed with its size`);
const noAuth = await client.GET("/api/backups");
expectError(noAuth.error, noAuth.response, 401);

// File token, download.
const tokenNoAuth = await client.POST("/api/files/token");
expectError(tokenNoAuth.error, tokenNoAuth.response, 401);
async function fileToken(): Promise<string> {
  const { data } = await client.POST("/api/files/token", { headers });
  assert.ok(data);
  return data.token;
}
async function download(key: string): Promise<Uint8Array<ArrayBuffer>> {
  const got = await client.GET("/api/backups/{key}", {
    params: { path: { key }, query: { token: await fileToken() } },
    parseAs: "arrayBuffer",
  });
  assert.ok(got.data, `download ${key}: ${got.response.status}`);
  assert.equal(got.response.headers.get("content-type"), "application/zip");
  return new Uint8Array(got.data);
}
const archive = await download(name);
assert.equal(archive.length, entry.size);
assert.deepEqual([...archive.subarray(0, 4)], [0x50, 0x4b, 0x03, 0x04], "a zip");
const missing = await client.GET("/api/backups/{key}", {
  params: { path: { key: `${prefix}-missing.zip` }, query: { token: await fileToken() } },
});
expectError(missing.error, missing.response, 404);

// Upload the downloaded archive under another name; it comes back byte for byte.
const uploadName = `${prefix}-uploaded.zip`;
function form(bytes: Uint8Array<ArrayBuffer>, fileName: string) {
  return {
    body: { file: new Blob([bytes], { type: "application/zip" }) },
    bodySerializer(body: { file: Blob }) {
      const data = new FormData();
      data.append("file", body.file, fileName);
      return data;
    },
  };
}
const uploaded = await client.POST("/api/backups/upload", { headers, ...form(archive, uploadName) });
assert.equal(uploaded.response.status, 204);
assert.deepEqual(await download(uploadName), archive);
const notZip = await client.POST("/api/backups/upload", {
  headers,
  ...form(new TextEncoder().encode("not a zip"), `${prefix}-not-a-zip.zip`),
});
assert.equal(expectError(notZip.error, notZip.response, 400).data["file"]?.code, "validation_invalid_mime_type");

// Delete.
const deleted = await client.DELETE("/api/backups/{key}", { headers, params: { path: { key: uploadName } } });
assert.equal(deleted.response.status, 204);
const deletedAgain = await client.DELETE("/api/backups/{key}", { headers, params: { path: { key: uploadName } } });
expectError(deletedAgain.error, deletedAgain.response, 404);

// Restore; the server restarts on the same socket and is back once a create is accepted.
const restoreMissing = await client.POST("/api/backups/{key}/restore", {
  headers,
  params: { path: { key: `${prefix}-missing.zip` } },
});
expectError(restoreMissing.error, restoreMissing.response, 404);
const restored = await client.POST("/api/backups/{key}/restore", { headers, params: { path: { key: name } } });
assert.equal(restored.response.status, 204);
const after = `${prefix}-after-restore.zip`;
const deadline = Date.now() + 60_000;
for (;;) {
  assert.ok(Date.now() < deadline, "the server did not finish the restore within 60 s");
  try {
    const { response } = await client.POST("/api/backups", { headers, body: { name: after } });
    if (response.status === 204) break;
    assert.equal(response.status, 400, "busy while restoring");
  } catch (e) {
    // A kept-alive connection of the old process is closed by the restart: retry.
    if (!(e instanceof TypeError)) throw e;
  }
  await new Promise((r) => setTimeout(r, 100));
}
for (const key of [name, after]) {
  const { response } = await client.DELETE("/api/backups/{key}", { headers, params: { path: { key } } });
  assert.equal(response.status, 204);
}
console.log("openapi-typescript + openapi-fetch: whole flow passed");
