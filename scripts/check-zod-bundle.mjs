// Checks scripts/bundle/zod.js, the trimmed zod entry the Worker's bundle uses (wrangler.toml [alias]):
//   - every `z.<name>` read in src/, durable-objects/ and workers/, and every name the OpenAPI libraries read from
//     the `z` they are handed, is in it, unless zod's own `z` lacks it too (then it is a type, such as `z.infer`);
//   - every name in it is the very value zod's own entry exports under that name, on `z` and at the top level.
// Run by `npm run check`; `--self-test` shows that a missing name and a wrong value are both caught.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as real from "zod";
import * as trimmed from "./bundle/zod.js";

/** The names the libraries that receive `z` read from it (read from their sources: see the self-test). */
const LIBRARY_NAMES = {
	"@asteasolutions/zod-to-openapi": ["ZodType"],
	"@hono/zod-openapi": [],
};

function sources(dir) {
	const out = [];
	for (const entry of readdirSync(dir, { withFileTypes: true })) {
		const path = join(dir, entry.name);
		if (entry.isDirectory()) out.push(...sources(path));
		else if (/\.(ts|tsx|js|mjs)$/.test(entry.name)) out.push(path);
	}
	return out;
}

/** `z.<name>` reads in one file; `z.<name><typeof …>` is a type (`z.infer`, `z.input`), not a read. */
const readsOf = (text) => [...text.matchAll(/(?<![\w$.])z\.([A-Za-z_$][\w$]*)(?![\w$]|<typeof\b)/g)].map((m) => m[1]);

export function problems(used, entry, zod) {
	const found = [];
	for (const [name, where] of used) {
		if (name in zod.z && !(name in entry.z)) found.push(`z.${name} (${where}) is not in scripts/bundle/zod.js`);
	}
	for (const name of Object.keys(entry.z)) {
		if (name === "z" || name === "default") continue;
		if (entry.z[name] !== zod.z[name]) found.push(`z.${name} in scripts/bundle/zod.js is not zod's own z.${name}`);
		if (name in zod && entry[name] !== zod[name]) found.push(`${name} in scripts/bundle/zod.js is not zod's own`);
	}
	if (entry.default !== entry.z) found.push("scripts/bundle/zod.js: the default export is not z");
	return found;
}

function usedNames() {
	const used = new Map();
	for (const dir of ["src", "durable-objects", "workers"]) {
		for (const file of sources(dir)) {
			for (const name of readsOf(readFileSync(file, "utf8"))) if (!used.has(name)) used.set(name, file);
		}
	}
	for (const [pkg, names] of Object.entries(LIBRARY_NAMES)) for (const name of names) used.set(name, pkg);
	return used;
}

function selfTest() {
	const fixture = "const a = z.bigint();\ntype A = z.input<typeof a>;";
	const missing = problems(new Map(readsOf(fixture).map((name) => [name, "fixture.ts"])), trimmed, real);
	const wrong = problems(new Map(), { ...trimmed, z: { ...trimmed.z, string: real.z.number } }, real);
	const libraryReads = readFileSync("node_modules/@asteasolutions/zod-to-openapi/dist/index.mjs", "utf8");
	const extend = libraryReads.slice(libraryReads.indexOf("function extendZodWithOpenApi(zod)"));
	const zodReads = [...new Set([...extend.slice(0, 4000).matchAll(/\bzod\.([A-Za-z_$][\w$]*)/g)].map((m) => m[1]))];
	const failures = [];
	if (!missing.some((p) => p.includes("z.bigint"))) failures.push("a name used but not listed was not caught");
	if (missing.some((p) => p.includes("z.input"))) failures.push("a type (z.input<typeof …>) was taken for a read");
	if (!wrong.some((p) => p.includes("z.string"))) failures.push("a listed name with the wrong value was not caught");
	if (zodReads.join() !== LIBRARY_NAMES["@asteasolutions/zod-to-openapi"].join())
		failures.push(`extendZodWithOpenApi reads zod.${zodReads.join(", zod.")}: update LIBRARY_NAMES`);
	const hono = readFileSync("node_modules/@hono/zod-openapi/dist/index.mjs", "utf8");
	if (readsOf(hono.replace(/\/\*[\s\S]*?\*\//g, "")).length > 0)
		failures.push("@hono/zod-openapi reads names from z: update LIBRARY_NAMES");
	return failures;
}

const found = process.argv.includes("--self-test") ? selfTest() : problems(usedNames(), trimmed, real);
if (found.length > 0) {
	console.error(`check-zod-bundle:\n  ${found.join("\n  ")}`);
	process.exit(1);
}
console.log(
	process.argv.includes("--self-test")
		? "check-zod-bundle: self-test passed"
		: `check-zod-bundle: ${Object.keys(trimmed.z).length} names, all zod's own, none missing`,
);
