// Prints the size of the bundled Worker in dist/ (raw and gzip), as `wrangler deploy` would upload it.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const dir = "dist";
let raw = 0;
let gzip = 0;
for (const name of readdirSync(dir)) {
	const path = join(dir, name);
	if (!statSync(path).isFile() || !/\.(m?js|wasm)$/.test(name)) continue;
	const bytes = readFileSync(path);
	raw += bytes.length;
	gzip += gzipSync(bytes, { level: 9 }).length;
}
console.log(`bundle: ${(raw / 1024).toFixed(1)} KiB raw, ${(gzip / 1024).toFixed(1)} KiB gzip`);
