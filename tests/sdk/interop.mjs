// One flow of the official PocketBase JS SDK whose results must be the same on PocketBase
// and on pb-backups serving the same data dir: prints them as one JSON object.
// Env: PB_URL, PB_SUPERUSER_EMAIL, PB_SUPERUSER_PASSWORD, PB_USER_EMAIL, PB_USER_PASSWORD.
// Leaves the backups as it found them.

import PocketBase from "pocketbase";

const env = process.env;
const KEY = "sdk_interop.zip";
const COPY = "sdk_interop_copy.zip";

async function statusOf(promise) {
  try {
    await promise;
    return 200;
  } catch (e) {
    return e.status;
  }
}

const pb = new PocketBase(env.PB_URL).autoCancellation(false);
const auth = await pb.collection("_superusers").authWithPassword(env.PB_SUPERUSER_EMAIL, env.PB_SUPERUSER_PASSWORD);
const user = new PocketBase(env.PB_URL).autoCancellation(false);
const userAuth = await user.collection("users").authWithPassword(env.PB_USER_EMAIL, env.PB_USER_PASSWORD);

const result = {
  superuser: { collectionName: auth.record.collectionName, email: auth.record.email, id: auth.record.id },
  user: { collectionName: userAuth.record.collectionName, email: userAuth.record.email, id: userAuth.record.id },
  userListStatus: await statusOf(user.backups.getFullList()),
};
await pb.backups.create(KEY);
const listed = await pb.backups.getFullList();
result.listedAfterCreate = listed.map((b) => b.key).filter((k) => k.startsWith("sdk_interop")).sort();
const url = pb.backups.getDownloadURL(await pb.files.getToken(), KEY);
const response = await fetch(url);
const bytes = new Uint8Array(await response.arrayBuffer());
result.download = {
  status: response.status,
  contentType: response.headers.get("content-type"),
  zipMagic: Array.from(bytes.slice(0, 4)),
};
await pb.backups.upload({ file: new File([bytes], COPY) });
result.listedAfterUpload = (await pb.backups.getFullList()).map((b) => b.key).filter((k) => k.startsWith("sdk_interop")).sort();
await pb.backups.delete(KEY);
await pb.backups.delete(COPY);
result.listedAtEnd = (await pb.backups.getFullList()).map((b) => b.key).filter((k) => k.startsWith("sdk_interop")).sort();
console.log(JSON.stringify(result));
