// @ts-check
/**
 * Builds the Portkey AI gateway (npm `@portkey-ai/gateway`, a devDependency pinned to {@link PORTKEY_VERSION}) as a
 * Worker script for bench/llm.mjs, from its published package: the same-runtime peer the LLM plane is compared with.
 * Only the benchmark uses it; nothing in src/, workers/ or durable-objects/ imports it.
 *
 * The package holds one file, build/start-server.js: a minified ESM bundle for Node whose Hono app is a module-level
 * variable, followed by the Node server's start-up (argv, `serve`, the node-ws upgrade, a console banner). This
 * script reads that file, finds the app and the start-up by anchored patterns (it stops with an error when one is
 * not found exactly once: a new version needs a look, hence the exact pin), cuts the start-up off, appends
 * `export default <app>` and bundles the result with esbuild (wrangler's own copy) for workerd, resolving every
 * import from the package's own folder, so it gets the same dependencies (its zod 3, its @smithy copies) as on Node.
 * Node built-ins stay imports (`node:…`, served by workerd's `nodejs_compat`); the Node-only packages that are dead
 * code on workerd — ioredis (used only when REDIS_CONNECTION_STRING is set on Node), ws and @hono/node-ws (the Node
 * realtime route), @hono/node-server (the Node listener) — are replaced by the stubs in ./stubs.mjs.
 *
 * Writes `.tmp/portkey/portkey-worker.mjs`, the `main` of bench/portkey/wrangler.toml; rebuilt when older than
 * its inputs. Run it alone with `node bench/portkey/build.mjs` (`--force` rebuilds).
 */
import { mkdirSync, readFileSync, renameSync, statSync } from "node:fs";
import { builtinModules, createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..", "..");
/** The only version the anchors below are known to fit. */
export const PORTKEY_VERSION = "1.15.2";
const PACKAGE_DIR = join(ROOT, "node_modules", "@portkey-ai", "gateway");
const SOURCE = join(PACKAGE_DIR, "build", "start-server.js");
const STUBS = join(HERE, "stubs.mjs");
/** Where the Worker script goes (bench/portkey/wrangler.toml's `main`). */
export const PORTKEY_WORKER = join(ROOT, ".tmp", "portkey", "portkey-worker.mjs");

/** Node-only packages replaced by stubs: each is reached only on Node (`getRuntimeKey() === "node"`) or after the cut. */
const STUBBED = ["ioredis", "ws", "@hono/node-server", "@hono/node-ws"];
/** esbuild namespace of the modules that stand for a CommonJS `require()` of a Node built-in. */
const REQUIRED = "portkey-node-require";

/** The one match of `pattern` in `text`, or an error naming `what`. @param {string} text @param {RegExp} pattern @param {string} what */
function only(text, pattern, what) {
	const all = [...text.matchAll(new RegExp(pattern.source, `${pattern.flags.replace("g", "")}g`))];
	if (all.length !== 1) {
		throw new Error(
			`portkey build: ${what} found ${all.length} times in ${SOURCE} (expected once); the anchors fit @portkey-ai/gateway ${PORTKEY_VERSION} only`,
		);
	}
	return /** @type {RegExpExecArray} */ (all[0]);
}

/**
 * The Worker module's source: start-server.js up to the Node start-up, plus a default export of the app.
 * @param {string} source
 */
export function workerSource(source) {
	// The app: `const Lu=new t,Ju=o();"node"===Ju&&process.env.REDIS_CONNECTION_STRING&&…` in 1.15.2, where `t` is
	// Hono (`import{Hono as t}from"hono"`) and `o` is getRuntimeKey (`import{getRuntimeKey as o,…}from"hono/adapter"`).
	const hono = String(only(source, /import\{Hono as ([\w$]+)\}from"hono";/, "the Hono import")[1]);
	const runtimeKey = String(
		only(source, /import\{getRuntimeKey as ([\w$]+)[,}][^;]*from"hono\/adapter";/, "getRuntimeKey")[1],
	);
	const appDecl = only(
		source,
		new RegExp(
			`const ([\\w$]+)=new ${esc(hono)},([\\w$]+)=${esc(runtimeKey)}\\(\\);"node"===\\2&&process\\.env\\.REDIS_CONNECTION_STRING`,
		),
		"the app's declaration",
	);
	const app = /** @type {string} */ (appDecl[1]);
	// Routes the benchmark calls must be registered on that variable, before the cut.
	only(source, new RegExp(`${esc(app)}\\.post\\("/v1/chat/completions",`), "the chat completions route");
	// The Node start-up: `const Fu=process.argv.slice(2),…` to the end of the file (serve, node-ws, banner).
	const tail = only(source, /(?<=;)const [\w$]+=process\.argv\.slice\(2\),/, "the Node start-up");
	if (tail.index <= appDecl.index) throw new Error("portkey build: the Node start-up comes before the app");
	const kept = source.slice(0, tail.index).replace(/^#!.*\n/, "");
	// Nothing the Worker keeps may still start a Node server.
	for (const marker of ["process.argv", "injectWebSocket"]) {
		if (kept.includes(marker)) throw new Error(`portkey build: ${marker} is still in the part kept`);
	}
	return `${kept}\nexport default ${app};\n`;
}

/**
 * The wait Portkey's stream reader (`readStream` in its src/handlers/streamHandler.ts) sleeps before it passes on the
 * first chunk of a provider's stream — `if (isFirstChunk) { isFirstChunk = false; await new Promise((resolve) =>
 * setTimeout(resolve, 25)); }` in 1.15.2 — read from the package, so the benchmark can say how much of Portkey's
 * time to a stream's first byte is that wait. Undefined when the pattern is not there.
 */
export function portkeyFirstChunkWaitMs() {
	const source = readFileSync(SOURCE, "utf8");
	const all = [
		...source.matchAll(
			/if\(([\w$]+)\?\(\1=!1,await new Promise\(\(([\w$]+)=>setTimeout\(\2,(\d+)\)\)\)\):[\w$]+&&await new Promise/g,
		),
	];
	return all.length === 1 ? Number(all[0]?.[3]) : undefined;
}

/** @param {string} s */
const esc = (s) => s.replace(/[$]/g, "\\$");

/** Milliseconds since the epoch of the last change of a file (0 when there is none). @param {string} path */
const mtime = (path) => {
	try {
		return statSync(path).mtimeMs;
	} catch {
		return 0;
	}
};

/**
 * Builds the Worker script unless it is newer than its inputs (`force` rebuilds); resolves to its path.
 * @param {{ force?: boolean; log?: (line: string) => void }} [options]
 */
export async function buildPortkey(options = {}) {
	const pkg = JSON.parse(readFileSync(join(PACKAGE_DIR, "package.json"), "utf8"));
	if (pkg.version !== PORTKEY_VERSION) {
		throw new Error(
			`portkey build: node_modules has @portkey-ai/gateway ${pkg.version}, expected ${PORTKEY_VERSION} (run npm ci)`,
		);
	}
	const inputs = [SOURCE, STUBS, fileURLToPath(import.meta.url), join(PACKAGE_DIR, "package.json")];
	if (!options.force && mtime(PORTKEY_WORKER) > Math.max(...inputs.map(mtime))) return PORTKEY_WORKER;

	// wrangler's own esbuild, as wrangler resolves it (not a dependency of the project's own).
	const require = createRequire(createRequire(import.meta.url).resolve("wrangler/package.json"));
	/** @type {typeof import("esbuild")} */
	const esbuild = require("esbuild");
	const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
	const staging = `${PORTKEY_WORKER}.${process.pid}.tmp`;
	mkdirSync(dirname(PORTKEY_WORKER), { recursive: true });
	const result = await esbuild.build({
		stdin: {
			contents: workerSource(readFileSync(SOURCE, "utf8")),
			// Resolve every import as the published file does: from its own folder.
			resolveDir: dirname(SOURCE),
			sourcefile: "@portkey-ai/gateway/build/start-server.js (Node start-up cut)",
			loader: "js",
		},
		bundle: true,
		format: "esm",
		target: "es2022",
		platform: "neutral",
		// As wrangler bundles for workerd.
		conditions: ["workerd", "worker", "browser"],
		mainFields: ["browser", "module", "main"],
		minify: true,
		legalComments: "none",
		outfile: staging,
		logLevel: "silent",
		metafile: true,
		plugins: [
			{
				name: "portkey-for-workerd",
				setup(build) {
					build.onResolve({ filter: /.*/ }, (args) => {
						if (builtins.has(args.path)) {
							const path = args.path.startsWith("node:") ? args.path : `node:${args.path}`;
							// A CommonJS `require("fs")` (async-retry, avsc) becomes a module importing the built-in, as
							// wrangler does for nodejs_compat: workerd has no `require` in an ES module Worker.
							if (args.kind === "require-call") return { path, namespace: REQUIRED };
							return { path, external: true };
						}
						if (STUBBED.includes(args.path)) return { path: STUBS, namespace: "file" };
						return undefined;
					});
					build.onLoad({ filter: /.*/, namespace: REQUIRED }, (args) => ({
						contents: `import builtin from ${JSON.stringify(args.path)}; module.exports = builtin;`,
						loader: "js",
					}));
				},
			},
		],
	});
	for (const w of result.warnings) options.log?.(`portkey build: warning: ${w.text}`);
	// No copy of a stubbed package may have been bundled some other way.
	const inputsBundled = Object.keys(result.metafile.inputs);
	for (const name of STUBBED) {
		if (inputsBundled.some((p) => p.includes(`node_modules/${name}/`))) {
			throw new Error(`portkey build: ${name} was bundled instead of stubbed`);
		}
	}
	renameSync(staging, PORTKEY_WORKER);
	options.log?.(
		`portkey build: ${PORTKEY_WORKER} (${(statSync(PORTKEY_WORKER).size / 1024).toFixed(0)} KiB, ${inputsBundled.length} inputs)`,
	);
	return PORTKEY_WORKER;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
	await buildPortkey({ force: process.argv.includes("--force"), log: (line) => process.stdout.write(`${line}\n`) });
}
