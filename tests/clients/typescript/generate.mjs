// Generates generated/schema.d.ts from openapi.yaml with openapi-typescript's Node API.
// The API is the CLI's plus one transform: a `format: binary` string (the uploaded file,
// the downloaded zip) is a Blob, as the openapi-typescript docs advise; the CLI alone
// types it as `string`, which no caller can send as a file.
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const [input, output] = process.argv.slice(2);
const BLOB = ts.factory.createTypeReferenceNode(ts.factory.createIdentifier("Blob"));
const ast = await openapiTS(pathToFileURL(resolve(input)), {
  transform(schema) {
    if (schema.format === "binary") return BLOB;
  },
});
await mkdir(dirname(resolve(output)), { recursive: true });
await writeFile(output, astToString(ast));
