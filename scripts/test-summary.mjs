// Prints one plain closing line, "N passed, N failed, N skipped", from the JSON reports that
// `npm run test:unit` and `npm run test:e2e` write to .tmp/test-results/. Used by .ci/run.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const dir = ".tmp/test-results";
let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of existsSync(dir) ? readdirSync(dir) : []) {
	if (!file.endsWith(".json")) continue;
	const report = JSON.parse(readFileSync(join(dir, file), "utf8"));
	passed += report.numPassedTests ?? 0;
	failed += report.numFailedTests ?? 0;
	skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
