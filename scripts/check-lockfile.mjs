// Fails when package-lock.json cannot install on every platform: each optional dependency a locked
// package declares (biome's, workerd's and esbuild's per-platform binaries) must be locked too, or
// `npm ci` on another platform stops with "Missing: … from lock file". Run by `npm run check`.
import { readFileSync } from "node:fs";

const lock = JSON.parse(readFileSync(new URL("../package-lock.json", import.meta.url), "utf8"));
const packages = lock.packages ?? {};

/** Where npm would resolve `name` from the package at `path`: its own node_modules, then each parent's. */
function resolves(path, name) {
	let dir = path;
	for (;;) {
		if (packages[`${dir ? `${dir}/` : ""}node_modules/${name}`]) return true;
		if (!dir) return false;
		const at = dir.lastIndexOf("node_modules/");
		dir = at <= 0 ? "" : dir.slice(0, at - 1);
	}
}

const missing = [];
for (const [path, pkg] of Object.entries(packages)) {
	for (const name of Object.keys(pkg.optionalDependencies ?? {})) {
		if (!resolves(path, name)) missing.push(`${name} (optional dependency of ${path || "the project"})`);
	}
}
if (missing.length > 0) {
	console.error(
		`package-lock.json lacks ${missing.length} optional package(s), so \`npm ci\` fails on other platforms:\n  ${missing.join("\n  ")}\nRegenerate it: rm -rf node_modules package-lock.json && npm install`,
	);
	process.exit(1);
}
console.log(`lockfile: every optional platform package is locked (${Object.keys(packages).length} entries)`);
