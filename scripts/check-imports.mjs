// Fails when the import graph of src/, workers/, durable-objects/ and bench/worker/ bends the layout the
// README describes ("Which capability may use which"): an import circle between files, a deep import
// into another capability (anything but its index.ts), an import one capability may not make (the
// table below), or an edge of the table no import uses (so the table is the real picture). Run by `npm run check`;
// `--self-test` runs the checks against small in-memory trees and fails unless each is caught.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, posix, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Which src/<capability> may import which (each only through its index.ts). `lib` is the kernel and
 * imports nothing from src/; `http`, `config` and `db` are the base the planes stand on. `app`
 * (src/app.ts) assembles the Hono app and may import any capability. workers/ and durable-objects/
 * may import any capability; src/ imports neither of them, and durable-objects/ never imports workers/.
 *
 * To let a capability use another, add the name to its row here and say why in the commit. The table
 * must stay a DAG (checked), and the graph of files must have no circle even inside one capability.
 */
export const ALLOWED = {
	// The kernel: encodings, hashes, bounded maps, clocks (node: built-ins only, see LIB_PACKAGES).
	lib: [],
	// The base every plane stands on.
	config: ["lib"],
	db: ["lib"],
	http: ["config", "lib"],
	// Services the planes share, lowest first.
	storage: ["lib"],
	events: ["config", "db", "http", "lib"],
	audit: ["db", "events", "http", "lib"],
	auth: ["audit", "config", "db", "http", "lib"],
	ratelimit: ["config", "http", "lib"],
	breaker: ["audit", "config", "db", "events", "http", "lib"],
	retention: ["config", "db", "http"],
	// Planes and APIs.
	"dead-letters": ["audit", "db", "events", "http", "lib"],
	admin: ["audit", "auth", "config", "db", "dead-letters", "http"],
	webhooks: ["audit", "auth", "breaker", "config", "db", "events", "http", "lib", "ratelimit", "storage"],
	llm: ["audit", "breaker", "config", "db", "events", "http", "lib", "ratelimit", "storage"],
	system: ["db", "http", "lib"],
	// src/app.ts assembles the app from every capability.
	app: "*",
};

/** The only packages src/lib may import: it stays platform-neutral (no Hono, zod, drizzle or bindings). */
const LIB_PACKAGES = /^node:/;

// bench/worker holds the benchmark-only Worker code that only workers/bench.ts may import.
const ROOTS = ["src", "workers", "durable-objects", "bench/worker"];
const EXTENSIONS = [".ts", ".mts", ".tsx"];

// `import … from "x"`, `export … from "x"` (including `import type`, default + named, `* as`), across lines.
const FROM = /^[ \t]*(?:import|export)\s+(?:type\s+)?[\w\s{},*$]*?\bfrom\s*["']([^"']+)["']/gm;
// `import "x"` for its side effects, and `import("x")`.
const BARE = /^[ \t]*import\s*["']([^"']+)["']/gm;
const DYNAMIC = /\bimport\(\s*["']([^"']+)["']\s*\)/g;

/** The specifiers a module's text imports. Comments are dropped first, so a commented-out import does not count. */
export function importsOf(text) {
	const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
	const out = [];
	for (const pattern of [FROM, BARE, DYNAMIC]) {
		for (const m of code.matchAll(pattern)) out.push(m[1]);
	}
	return out;
}

/** What a file belongs to: `src/<capability>`'s name, `app` for a file directly in src/, or its top folder. */
export function unitOf(file) {
	const parts = file.split("/");
	if (parts[0] !== "src") return parts[0];
	return parts.length === 2 ? "app" : parts[1];
}

function resolve(from, specifier, files) {
	if (!specifier.startsWith(".")) return null; // a package or a platform module
	const base = posix.normalize(posix.join(posix.dirname(from), specifier));
	const candidates = [base, ...EXTENSIONS.map((e) => base + e), ...EXTENSIONS.map((e) => `${base}/index${e}`)];
	return candidates.find((c) => files.has(c)) ?? undefined;
}

/** Every import circle between files: the files of each tangle (sorted), and one loop through them (first repeated last). */
function circles(graph) {
	// Tarjan's strongly connected components, iterative so no tree is deep enough to overflow the stack.
	const index = new Map();
	const low = new Map();
	const onStack = new Set();
	const stack = [];
	const found = [];
	let next = 0;
	for (const root of graph.keys()) {
		if (index.has(root)) continue;
		const work = [[root, 0]];
		index.set(root, next);
		low.set(root, next++);
		stack.push(root);
		onStack.add(root);
		while (work.length > 0) {
			const frame = work[work.length - 1];
			const [node, i] = frame;
			const edges = graph.get(node) ?? [];
			if (i < edges.length) {
				frame[1]++;
				const to = edges[i];
				if (!index.has(to)) {
					index.set(to, next);
					low.set(to, next++);
					stack.push(to);
					onStack.add(to);
					work.push([to, 0]);
				} else if (onStack.has(to)) {
					low.set(node, Math.min(low.get(node), index.get(to)));
				}
				continue;
			}
			work.pop();
			if (work.length > 0) {
				const parent = work[work.length - 1][0];
				low.set(parent, Math.min(low.get(parent), low.get(node)));
			}
			if (low.get(node) === index.get(node)) {
				const component = [];
				let member;
				do {
					member = stack.pop();
					onStack.delete(member);
					component.push(member);
				} while (member !== node);
				const selfLoop = component.length === 1 && edges.includes(node);
				if (component.length > 1 || selfLoop) {
					found.push({ files: component.sort(), loop: cycleThrough(graph, new Set(component)) });
				}
			}
		}
	}
	return found;
}

/** One concrete loop inside a strongly connected component, for the message. */
function cycleThrough(graph, component) {
	const start = [...component].sort()[0];
	const previous = new Map([[start, null]]);
	const queue = [start];
	while (queue.length > 0) {
		const node = queue.shift();
		for (const to of graph.get(node) ?? []) {
			if (!component.has(to)) continue;
			if (to === start) {
				const path = [start];
				for (let at = node; at !== start; at = previous.get(at)) path.splice(1, 0, at);
				return [...path, start];
			}
			if (!previous.has(to)) {
				previous.set(to, node);
				queue.push(to);
			}
		}
	}
	return [start, start];
}

/**
 * The problems in a tree given as `Map<path, text>` (paths relative to the project, `/`-separated).
 * Returns the problems (an empty list means the tree keeps every rule) and the file graph.
 */
export function check(sources, allowed = ALLOWED) {
	const files = new Set(sources.keys());
	const graph = new Map();
	const problems = [];
	// The table itself must be a DAG, or two capabilities could lean on each other through different files.
	const layers = new Map(Object.entries(allowed).filter(([, row]) => row !== "*"));
	for (const { loop } of circles(layers)) {
		problems.push(
			`the dependency table has a circle: ${loop.join(" > ")}; one of those rows in ALLOWED (scripts/check-imports.mjs) must give way`,
		);
	}
	for (const [file, text] of sources) {
		const edges = [];
		graph.set(file, edges);
		const from = unitOf(file);
		for (const specifier of importsOf(text)) {
			const target = resolve(file, specifier, files);
			if (target === null) {
				if (from === "lib" && file.startsWith("src/") && !LIB_PACKAGES.test(specifier)) {
					problems.push(
						`${file}: import "${specifier}": src/lib imports only node: built-ins (it knows nothing of Hono, zod, drizzle or bindings)`,
					);
				}
				continue;
			}
			if (target === undefined) {
				problems.push(`${file}: import "${specifier}" resolves to no file under ${ROOTS.join(", ")}`);
				continue;
			}
			edges.push(target);
			const to = unitOf(target);
			if (from === to) continue;
			const where = `${file}: import "${specifier}" (${target})`;
			if (file.startsWith("src/") && !target.startsWith("src/")) {
				problems.push(
					`${where}: src/ never imports from ${to}/ (entry points and Durable Objects import src/, not the reverse)`,
				);
				continue;
			}
			if (to === "bench" && file !== "workers/bench.ts") {
				problems.push(
					`${where}: only workers/bench.ts imports the benchmark code in bench/worker (the deployed gateway carries none)`,
				);
				continue;
			}
			if (from === "durable-objects" && to === "workers") {
				problems.push(`${where}: durable-objects/ never imports from workers/`);
				continue;
			}
			if (!target.startsWith("src/") || to === "app") {
				if (to === "app" && from !== "workers") problems.push(`${where}: only workers/ import src/app.ts`);
				continue;
			}
			if (target !== `src/${to}/index.ts`) {
				problems.push(
					`${where}: a deep import into src/${to}; import "${to}" through src/${to}/index.ts (export what is needed there)`,
				);
			}
			if (!file.startsWith("src/")) continue;
			const row = allowed[from];
			if (row === undefined) {
				problems.push(
					`${where}: src/${from} has no row in the dependency table; add \`${from}: [${JSON.stringify(to)}, …]\` to ALLOWED in scripts/check-imports.mjs`,
				);
			} else if (row !== "*" && !row.includes(to)) {
				problems.push(
					`${where}: src/${from} may not import src/${to} (its row allows ${row.length > 0 ? row.join(", ") : "nothing from src/"}). If the dependency is meant, add ${JSON.stringify(to)} to ALLOWED.${from} in scripts/check-imports.mjs; if not, move the shared piece down (src/lib, or the lower capability) or inject it`,
				);
			}
		}
	}
	for (const { loop } of circles(graph)) problems.push(`import circle: ${loop.join(" > ")}`);
	const used = usesOf(graph);
	for (const [from, row] of Object.entries(allowed)) {
		if (row === "*" || !used.has(from)) continue;
		for (const to of row) {
			if (!used.get(from).has(to)) {
				problems.push(
					`src/${from} no longer imports src/${to}: remove "${to}" from ALLOWED.${from} in scripts/check-imports.mjs (and the README's table)`,
				);
			}
		}
	}
	return { problems, graph };
}

function readTree(root) {
	const sources = new Map();
	const walk = (dir) => {
		for (const entry of readdirSync(dir, { withFileTypes: true })) {
			const path = join(dir, entry.name);
			if (entry.isDirectory()) walk(path);
			else if (EXTENSIONS.some((e) => entry.name.endsWith(e)) && !entry.name.endsWith(".d.ts")) {
				sources.set(relative(root, path).split(sep).join("/"), readFileSync(path, "utf8"));
			}
		}
	};
	for (const top of ROOTS) walk(join(root, top));
	return sources;
}

/** `--graph`: which capability imports which today, to write the table (or the README's picture) from. */
/** Which unit imports which, from the file graph. */
function usesOf(graph) {
	const uses = new Map();
	for (const [file, edges] of graph) {
		const from = unitOf(file);
		if (!uses.has(from)) uses.set(from, new Set());
		for (const to of edges) if (unitOf(to) !== from) uses.get(from).add(unitOf(to));
	}
	return uses;
}

function printGraph(graph) {
	for (const [from, to] of [...usesOf(graph)].sort(([a], [b]) => a.localeCompare(b))) {
		console.log(`${from}: ${[...to].sort().join(", ") || "(nothing)"}`);
	}
}

function selfTest() {
	const base = {
		"src/lib/index.ts": 'export { a } from "./a";',
		"src/lib/a.ts": "export const a = 1;",
		"src/http/index.ts": 'import { a } from "../lib";\nexport const h = a;',
		"src/events/index.ts": 'import type { h } from "../http";\nexport const e = 1;',
		"src/audit/index.ts": 'import {\n\ttype e,\n} from "../events";\nexport const au = 1;',
		"workers/gateway.ts": 'import { au } from "../src/audit";\nimport app from "../src/app";',
		"src/app.ts": 'import { au } from "./audit";\nexport default au;',
	};
	const table = { lib: [], http: ["lib"], events: ["http"], audit: ["events"], app: "*" };
	const cases = [
		["a clean tree", {}, null],
		[
			"a circle through two capabilities",
			{ "src/events/index.ts": 'import type { au } from "../audit";\nexport const e = 1;' },
			/import circle: src\/audit\/index\.ts > src\/events\/index\.ts > src\/audit\/index\.ts/,
		],
		[
			"a circle inside one capability",
			{ "src/lib/a.ts": 'import { a } from "./index";\nexport const b = a;' },
			/import circle: src\/lib\/a\.ts > src\/lib\/index\.ts > src\/lib\/a\.ts/,
		],
		[
			"a deep import",
			{ "src/http/index.ts": 'import { a } from "../lib/a";\nexport const h = a;' },
			/src\/http\/index\.ts: import "\.\.\/lib\/a" .*deep import into src\/lib/,
		],
		[
			"a forbidden edge (lib importing a capability)",
			{ "src/lib/a.ts": 'export { h } from "../http";' },
			/src\/lib\/a\.ts: .*src\/lib may not import src\/http .*nothing from src\//,
		],
		[
			"a capability missing from the table",
			{ "src/search/index.ts": 'import { a } from "../lib";' },
			/src\/search has no row in the dependency table/,
		],
		[
			"src importing an entry point",
			{ "src/http/index.ts": 'import "../../workers/gateway";' },
			/src\/ never imports from workers\//,
		],
		[
			"a circle in the dependency table",
			{},
			/the dependency table has a circle: events > http > events/,
			{ ...table, http: ["events", "lib"] },
		],
		[
			"the kernel importing a package",
			{ "src/lib/a.ts": 'import { z } from "zod";\nexport const a = z;' },
			/src\/lib imports only node: built-ins/,
		],
		[
			"an edge of the table no import uses",
			{},
			/src\/audit no longer imports src\/lib: remove "lib" from ALLOWED\.audit/,
			{ ...table, audit: ["events", "lib"] },
		],
		["a commented-out import", { "src/lib/a.ts": '// import { h } from "../http";\nexport const a = 1;' }, null],
	];
	let failed = 0;
	for (const [name, change, expected, rows = table] of cases) {
		const tree = new Map(Object.entries({ ...base, ...change }));
		const { problems } = check(tree, rows, []);
		const ok = expected === null ? problems.length === 0 : problems.some((p) => expected.test(p));
		if (!ok) {
			failed++;
			console.error(
				`check-imports self-test: ${name}: expected ${expected ?? "no problem"}, got:\n  ${problems.join("\n  ") || "(nothing)"}`,
			);
		}
	}
	if (failed > 0) process.exit(1);
	console.log(`imports self-test: ${cases.length} fixtures, each caught or passed as it should be`);
}

/**
 * The README's "Which capability may use which" table must say what ALLOWED says: the problems where
 * a row is missing, extra, or lists other capabilities.
 */
export function readmeProblems(readme, allowed = ALLOWED) {
	const section = readme.split("### Which capability may use which")[1]?.split(/\n#{2,3} /)[0];
	if (section === undefined) return ['README.md has no "Which capability may use which" section'];
	const rows = new Map();
	for (const line of section.split("\n")) {
		const cells = line.split("|").map((c) => c.trim());
		const name = /^`([\w-]+)`$/.exec(cells[1] ?? "")?.[1];
		if (!name) continue;
		const last = cells[cells.length - 2] ?? "";
		rows.set(name, last.startsWith("nothing") ? [] : last.split(",").map((c) => c.trim()));
	}
	const problems = [];
	for (const [name, row] of Object.entries(allowed)) {
		if (row === "*") continue;
		const said = rows.get(name);
		if (!said) problems.push(`README.md: the dependency table has no row for \`${name}\``);
		else if ([...said].sort().join(",") !== [...row].sort().join(",")) {
			problems.push(
				`README.md: \`${name}\` may import ${row.join(", ") || "nothing"} (ALLOWED), the README says ${said.join(", ") || "nothing"}`,
			);
		}
	}
	for (const name of rows.keys()) {
		if (!(name in allowed)) problems.push(`README.md: the dependency table names \`${name}\`, which ALLOWED does not`);
	}
	return problems;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
	if (process.argv.includes("--self-test")) {
		selfTest();
	} else {
		const root = join(dirname(fileURLToPath(import.meta.url)), "..");
		const sources = readTree(root);
		const { problems, graph } = check(sources);
		problems.push(...readmeProblems(readFileSync(join(root, "README.md"), "utf8")));
		if (process.argv.includes("--graph")) printGraph(graph);
		if (problems.length > 0) {
			console.error(`imports: ${problems.length} problem(s) in ${sources.size} files:\n  ${problems.join("\n  ")}`);
			process.exit(1);
		}
		console.log(
			`imports: ${sources.size} files, no circles, no deep imports, every edge in the dependency table (and the README says the same)`,
		);
	}
}
