// Prints the size of the bundled Worker in dist/ (raw and gzip), as `wrangler deploy` would upload it, and fails
// when the bundle or its source map (uploaded too: upload_source_maps) holds benchmark code: the pass-through route
// and the rows meter live in the benchmarks' own entry (workers/bench.ts, bench/worker/), never in the deployed one.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

/** The deployed bundle's gzip budget (issue 11: 214 KiB before the trimmed zod entry, scripts/bundle/zod.js). */
const GZIP_BUDGET_KIB = 150;
/** Strings only benchmark code holds: its routes and the bindings that switch it on. */
const BENCH_MARKERS = ["__bench", "BENCH_PASSTHROUGH_URL", "BENCH_ROWS", "bench/worker"];

const dir = "dist";
let raw = 0;
let gzip = 0;
const found = [];
for (const name of readdirSync(dir)) {
	const path = join(dir, name);
	if (!statSync(path).isFile() || !/\.(m?js|wasm|map)$/.test(name)) continue;
	const bytes = readFileSync(path);
	if (!name.endsWith(".map")) {
		raw += bytes.length;
		gzip += gzipSync(bytes, { level: 9 }).length;
	}
	const text = bytes.toString("latin1");
	for (const marker of BENCH_MARKERS) if (text.includes(marker)) found.push(`${path}: ${marker}`);
}
if (raw === 0) {
	console.error(`bundle: no .js or .wasm file in ${dir}/; run the build first`);
	process.exit(1);
}
console.log(
	`bundle: ${(raw / 1024).toFixed(1)} KiB raw, ${(gzip / 1024).toFixed(1)} KiB gzip (budget ${GZIP_BUDGET_KIB} KiB gzip)`,
);
if (gzip / 1024 > GZIP_BUDGET_KIB) {
	console.error(
		`bundle: over the ${GZIP_BUDGET_KIB} KiB gzip budget; see what grew with \`wrangler deploy --dry-run --metafile\``,
	);
	process.exit(1);
}
if (found.length > 0) {
	console.error(
		`bundle: benchmark code in the deployed bundle (import it from workers/bench.ts only):\n  ${found.join("\n  ")}`,
	);
	process.exit(1);
}
