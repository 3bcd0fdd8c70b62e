// @ts-check
/**
 * `npm run bench:profile -- --scenario <name>[,<name>…]`: CPU profiles of the gateway Worker under a steady load,
 * taken through workerd's V8 inspector, mapped back to the original sources through the bundle's source map.
 *
 * Scenarios (one gateway for all of a run's scenarios, in the order given, 2 s apart):
 *   - plane-bypass: `POST /v1/chat/completions`, model `openai/ok`, `x-edgeway-cache: bypass`, an enterprise tenant
 *     without an LLM budget (bench/llm.mjs's "bypass + no budget" row): authentication, admission without the
 *     budget, guardrails, routing through the breaker, the usage record (queue → D1); no cache.
 *   - plane-all: the same with everything on (bench/llm.mjs's "LLM plane" row): a tenant with a monthly token
 *     budget (reserve and settle on the isolate's lease, renewed in the RateLimiter object), every prompt unique,
 *     so every request is a cache MISS and a cache write.
 *   - passthrough: `POST /__bench/passthrough` (bench/worker/passthrough.ts): one subrequest to the stub, no checks.
 *   - webhook: verified GitHub push deliveries (`POST /webhooks/{id}`, ~2 KB, a fresh delivery id each), answered
 *     202, then processed by the queue consumer.
 * The upstream is the LLM stub in a process of its own (bench/setup.mjs startStubProcess), the gateway the
 * benchmarks' Worker (workers/bench.ts) under Miniflare's own listener, static-assets layer off, configured as
 * bench/llm.mjs configures it (llmConfigFor with the deployed routing defaults).
 *
 * The inspector: test/helpers/node/gateway.ts's startGateway has no `inspectorPort` option, so this script points
 * Miniflare at a wrapper of the workerd binary (`MINIFLARE_WORKERD_PATH`, a Miniflare environment variable) that
 * adds `--inspector-addr=127.0.0.1:<free port>`: Miniflare's own `inspectorPort` does no more. workerd's inspector
 * lists one target per Worker (one V8 isolate each): `core:user:<name>` is the gateway — its fetch handler, its
 * queue consumer and its Durable Objects (RateLimiter, CircuitBreaker) all run in that isolate — and Miniflare's
 * own Workers (`core:entry`, the HTTP entry every request passes through; `d1:db`, `cache:cache`, `queues:…`)
 * have theirs. The gateway is sampled every --interval µs, Miniflare's Workers every --aux-interval µs (each
 * profiled isolate's sampler interrupts workerd's thread; --no-aux profiles the gateway alone).
 *
 * Per scenario: one request checked, --warmup s of load, --duration s of the same load unprofiled (what workerd's CPU
 * per request is without the samplers), then --duration s of load (autocannon, --connections, pipelining 1) with
 * the profilers running from just before the load to just after it. Figures per request are the
 * profile's time ÷ the 2xx answers served while it ran; background work of the requests (usage records, cache
 * writes, budget settlements, queue batches) falls in the window at the rate it is generated, the tail of the last
 * requests' background work outside it. workerd's CPU time over the window (/proc) is printed beside the samples.
 * Writes the raw profiles (`.cpuprofile`, loadable in Chrome DevTools / speedscope) and a JSON summary under
 * .tmp/profiles/, and prints, for the gateway isolate: buckets, source files, the top functions by self and by
 * inclusive time, and which part of the Worker (request, queue consumer, Durable Object) the samples came from.
 *
 * Options: --scenario (default plane-bypass; comma-separated, or `all`), --duration <s> (10), --warmup <s> (3),
 * --connections <n> (20), --interval <µs> (100), --aux-interval <µs> (2000), --body-bytes <n> (1024, chat bodies),
 * --top <n> (25), --targets <ids> (comma-separated inspector target ids besides the gateway's, or `all`), --no-aux,
 * --no-baseline (skip the unprofiled run of the same load that measures what profiling costs), --analyse <summary>
 * (re-print an earlier run's report from its .tmp/profiles/<stamp>-summary.json; the profiles are read against the
 * copy of the bundle and its map the run saved beside them).
 * What profiling distorts: workerd's CPU per request grows by ×1.4–2 under the samplers (printed per scenario against
 * an unprofiled run of the same load), and with the inspector on, V8 routes every console.log through its inspector
 * (a console message is built and stored for DevTools), so the access log (`log`, src/http/logger.ts) reads several
 * times dearer here than without an inspector. The shares between the gateway's own functions are what to read.
 * Linux only (the workerd wrapper is a shell script; CPU time comes from /proc). Loads the TypeScript helpers
 * through Node's built-in type stripping (Node ≥ 22.18): run it through npm, which puts the pinned Node first.
 */
import { randomUUID } from "node:crypto";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { basename, join, relative } from "node:path";
import { buildWorker, ROOT, registerWebhookEndpoint, startGateway } from "../test/helpers/node/gateway.ts";
import { GATEWAY_OPENAI_KEY, llmConfigFor } from "../test/helpers/node/llm.ts";
import { analyse, cdpSession, inspectorTargets, isProjectFile, SourceMap } from "./cpuprofile.mjs";

/** @typedef {import("./cpuprofile.mjs").InspectorTarget} InspectorTarget */
import {
	BENCH_LIMITS,
	BENCH_MAIN,
	benchArgs,
	cpuNow,
	loadAverage,
	machineFacts,
	percentile,
	runAutocannon,
	say,
	sleep,
	workerdPids,
	workerLogTally,
} from "./lib.mjs";
import { chatBodies, GITHUB_HEADERS, signedPushPool, startStubProcess } from "./setup.mjs";

const args = benchArgs({
	counts: {
		duration: 10,
		warmup: 3,
		connections: 20,
		interval: 100,
		"aux-interval": 2000,
		"body-bytes": 1024,
		top: 25,
	},
	flags: ["no-aux", "no-baseline"],
	texts: { scenario: "plane-bypass", targets: "", analyse: "" },
});
const ALL_SCENARIOS = /** @type {const} */ (["plane-bypass", "plane-all", "passthrough", "webhook"]);
/** @typedef {(typeof ALL_SCENARIOS)[number]} ScenarioName */
const SCENARIOS = /** @type {ScenarioName[]} */ (
	args.text.scenario === "all" ? [...ALL_SCENARIOS] : args.text.scenario.split(",").map((s) => s.trim())
);
for (const s of SCENARIOS) {
	if (!ALL_SCENARIOS.includes(s)) throw new Error(`unknown --scenario ${s} (one of ${ALL_SCENARIOS.join(", ")}, all)`);
}
const DURATION_S = args.count.duration;
const WARMUP_S = args.count.warmup;
const CONNECTIONS = args.count.connections;
const INTERVAL_US = args.count.interval;
const AUX_INTERVAL_US = args.count["aux-interval"];
const BODY_BYTES = args.count["body-bytes"];
const TOP = args.count.top;
const OUT_DIR = join(ROOT, ".tmp", "profiles");
const INSPECTOR_TIMEOUT_MS = 20_000;
/** Bound on each inspector command; Profiler.stop sends the whole profile. */
const CDP_TIMEOUT_MS = 60_000;
/** Between scenarios, so one's background work (queue batches, cache writes) ends before the next is profiled. */
const SETTLE_MS = 2_000;
/** Signed GitHub payloads for the webhook scenario, and their size. */
const WEBHOOK_POOL = 256;
const WEBHOOK_BYTES = 2048;

// ---------------------------------------------------------------- workerd with its inspector on

/** A free TCP port on 127.0.0.1 (closed again before workerd binds it). */
function freePort() {
	return new Promise((resolvePort, reject) => {
		const server = createServer();
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			const address = server.address();
			const port = typeof address === "object" && address ? address.port : 0;
			server.close(() => resolvePort(port));
		});
	});
}

/**
 * Makes the next Miniflare start its workerd with the inspector on 127.0.0.1:`port`: a wrapper script of the binary
 * Miniflare would run, named by `MINIFLARE_WORKERD_PATH`. Returns the undo (environment and file).
 * @param {number} port
 */
function workerdWithInspector(port) {
	const previous = process.env.MINIFLARE_WORKERD_PATH;
	const real =
		previous ??
		/** @type {string} */ (createRequire(createRequire(import.meta.url).resolve("miniflare"))("workerd").default);
	mkdirSync(OUT_DIR, { recursive: true });
	const wrapper = join(OUT_DIR, `.workerd-inspector-${process.pid}.sh`);
	const quoted = `'${real.replace(/'/g, `'\\''`)}'`;
	writeFileSync(wrapper, `#!/bin/sh\nexec ${quoted} "$@" --inspector-addr=127.0.0.1:${port}\n`);
	chmodSync(wrapper, 0o755);
	process.env.MINIFLARE_WORKERD_PATH = wrapper;
	return () => {
		if (previous === undefined) delete process.env.MINIFLARE_WORKERD_PATH;
		else process.env.MINIFLARE_WORKERD_PATH = previous;
		rmSync(wrapper, { force: true });
	};
}

// ---------------------------------------------------------------- scenarios

/** @typedef {import("./lib.mjs").AutocannonRequest} AutocannonRequest */
/**
 * @typedef {{ name: ScenarioName; what: string; origin: string; requests: AutocannonRequest[];
 *   sample: () => RequestInit & { path: string }; expect: { status: number; headers: Record<string, string> } }} Scenario
 */

/**
 * The scenarios' requests against a started gateway (tenants seeded, credentials minted, endpoint registered).
 * @param {import("../test/helpers/node/gateway.ts").Gateway} gw
 */
async function scenariosFor(gw) {
	await gw.seedTenant({
		id: "bench",
		tier: "enterprise",
		limits: { ...BENCH_LIMITS, llmBudget: { monthlyTokens: 1_000_000_000_000 } },
	});
	await gw.seedTenant({ id: "bench-nobudget", tier: "enterprise", limits: BENCH_LIMITS });
	const jwt = async (/** @type {string} */ tenantId, /** @type {string[]} */ scopes) =>
		`Bearer ${await gw.mintJwt({ tenantId, scopes, tier: "enterprise", sub: `${tenantId}-user`, expiresInS: 7200 })}`;
	const body = chatBodies(BODY_BYTES);
	const origin = gw.url.origin;
	const plane = (/** @type {"MISS" | "BYPASS"} */ cache) => ({
		"x-edgeway-cache": cache,
		"x-edgeway-provider": "openai",
		"x-edgeway-attempts": "1",
	});
	/** @type {(path: string, headers: Record<string, string>, model: string) => { requests: AutocannonRequest[]; sample: Scenario["sample"] }} */
	const chat = (path, headers, model) => ({
		requests: [
			{
				method: "POST",
				path,
				headers: { "content-type": "application/json", ...headers },
				setupRequest: (req) => {
					req.body = body(model);
					return req;
				},
			},
		],
		sample: () => ({
			path,
			method: "POST",
			headers: { "content-type": "application/json", ...headers },
			body: body(model),
		}),
	});
	/** @type {Map<ScenarioName, () => Promise<Scenario>>} */
	const make = new Map();
	make.set("plane-bypass", async () => ({
		name: "plane-bypass",
		what: "POST /v1/chat/completions, x-edgeway-cache: bypass, tenant without a budget",
		origin,
		...chat(
			"/v1/chat/completions",
			{ authorization: await jwt("bench-nobudget", ["llm"]), "x-edgeway-cache": "bypass" },
			"openai/ok",
		),
		expect: { status: 200, headers: plane("BYPASS") },
	}));
	make.set("plane-all", async () => ({
		name: "plane-all",
		what: "POST /v1/chat/completions, everything on: cache MISS + write (unique prompts), budget reserve/settle",
		origin,
		...chat("/v1/chat/completions", { authorization: await jwt("bench", ["llm"]) }, "openai/ok"),
		expect: { status: 200, headers: plane("MISS") },
	}));
	make.set("passthrough", async () => ({
		name: "passthrough",
		what: "POST /__bench/passthrough: one subrequest to the stub, no checks",
		origin,
		...chat("/__bench/passthrough", { "x-upstream-authorization": "Bearer x" }, "ok"),
		expect: { status: 200, headers: {} },
	}));
	make.set("webhook", async () => {
		const token = (await jwt("bench", ["webhooks:manage"])).slice("Bearer ".length);
		const secret = `bench-github-secret-${randomUUID()}`;
		const endpoint = await registerWebhookEndpoint(gw.url, token, {
			name: "profile-load",
			source: "github",
			secrets: [secret],
		});
		const pool = signedPushPool(secret, WEBHOOK_POOL, WEBHOOK_BYTES);
		let next = 0;
		const delivery = () => {
			const p = /** @type {(typeof pool)[number]} */ (pool[next++ % pool.length]);
			return {
				headers: { ...GITHUB_HEADERS, "x-github-delivery": randomUUID(), "x-hub-signature-256": p.signature },
				body: p.body,
			};
		};
		const path = new URL(endpoint.ingestPath, gw.url).pathname;
		return {
			name: "webhook",
			what: `POST ${endpoint.ingestPath}: a verified GitHub push delivery (~${WEBHOOK_BYTES} B), fresh delivery id`,
			origin,
			requests: [
				{
					method: "POST",
					path,
					setupRequest: (req) => {
						const d = delivery();
						req.headers = d.headers;
						req.body = d.body;
						return req;
					},
				},
			],
			sample: () => ({ path, method: "POST", ...delivery() }),
			expect: { status: 202, headers: {} },
		};
	});
	return make;
}

/** Throws unless one request of the scenario answers as expected. @param {Scenario} s */
async function checkOnce(s) {
	const { path, ...init } = s.sample();
	const res = await fetch(new URL(path, s.origin), init);
	const text = await res.text();
	if (res.status !== s.expect.status) throw new Error(`${s.name}: HTTP ${res.status} ${text.slice(0, 300)}`);
	for (const [name, value] of Object.entries(s.expect.headers)) {
		const got = res.headers.get(name);
		if (got !== value) throw new Error(`${s.name}: ${name} is ${JSON.stringify(got)}, expected ${value}`);
	}
}

/** One autocannon run of a scenario; throws on any answer but the expected one. @param {Scenario} s @param {number} seconds */
async function drive(s, seconds) {
	const r = await runAutocannon({
		url: s.origin,
		duration: seconds,
		requests: s.requests,
		connections: CONNECTIONS,
		pipelining: 1,
	});
	const expected = r.statuses[s.expect.status] ?? 0;
	if (expected !== r.times.length || r.result.errors > 0 || r.result.timeouts > 0 || expected === 0) {
		throw new Error(
			`INVALID RUN: ${s.name} got statuses ${JSON.stringify(r.statuses)}, ${r.result.errors} connection errors, ${r.result.timeouts} timeouts`,
		);
	}
	return { ...r, served: expected, seconds: (r.last - r.started) / 1000 };
}

// ---------------------------------------------------------------- profiling

/** An isolate to profile: its inspector target, its WebSocket and its sampling interval. */
/** @typedef {{ id: string; url: string; interval: number }} ToProfile */

/**
 * The targets to profile: the gateway's (the one user Worker, `core:user:<name>`), and Miniflare's Workers (or
 * --targets) unless --no-aux. @param {number} port
 */
async function chooseTargets(port) {
	const targets = await inspectorTargets(port, INSPECTOR_TIMEOUT_MS);
	const ids = targets.map((t) => t.id);
	const users = ids.filter((id) => id.startsWith("core:user:"));
	if (users.length !== 1) {
		throw new Error(`expected one user Worker among workerd's inspector targets, got: ${ids.join(", ")}`);
	}
	const gatewayTarget = /** @type {string} */ (users[0]);
	/** @type {string[]} */
	let aux;
	if (args.text.targets) {
		aux = args.text.targets === "all" ? ids : args.text.targets.split(",").map((s) => s.trim());
		for (const id of aux)
			if (!ids.includes(id)) throw new Error(`no inspector target ${id} (targets: ${ids.join(", ")})`);
	} else aux = args.flag["no-aux"] ? [] : ids.filter((id) => /^(core:entry$|d1:|cache:|queues:)/.test(id));
	/** @type {ToProfile[]} */
	const chosen = [gatewayTarget, ...aux.filter((id) => id !== gatewayTarget)].map((id) => ({
		id,
		url: /** @type {InspectorTarget} */ (targets.find((t) => t.id === id)).webSocketDebuggerUrl,
		interval: id === gatewayTarget ? INTERVAL_US : AUX_INTERVAL_US,
	}));
	return { chosen, all: ids, gatewayTarget };
}

/**
 * Profiles every target while `work` runs. The sessions are opened, the profilers enabled and started just before
 * it, and stopped, disabled and closed just after it, so no session is attached outside the profiled run (an
 * attached, enabled profiler slows the isolate even when it is not sampling).
 * @template T @param {ToProfile[]} targets @param {() => Promise<T>} work
 * @returns {Promise<{ result: T; profiles: Map<string, import("./cpuprofile.mjs").Profile> }>}
 */
async function profiling(targets, work) {
	/** @type {{ t: ToProfile; session: Awaited<ReturnType<typeof cdpSession>> }[]} */
	const open = [];
	try {
		for (const t of targets) {
			open.push({ t, session: await cdpSession(t.url, CDP_TIMEOUT_MS) });
		}
		for (const { t, session } of open) {
			await session.send("Profiler.enable");
			await session.send("Profiler.setSamplingInterval", { interval: t.interval });
		}
		for (const { session } of open) await session.send("Profiler.start");
		let stopped = false;
		try {
			const result = await work();
			const answers = await Promise.all(open.map(({ session }) => session.send("Profiler.stop")));
			stopped = true;
			await Promise.allSettled(open.map(({ session }) => session.send("Profiler.disable")));
			return { result, profiles: new Map(open.map(({ t }, i) => [t.id, answers[i].profile])) };
		} finally {
			if (!stopped) await Promise.allSettled(open.map(({ session }) => session.send("Profiler.stop")));
		}
	} finally {
		for (const { session } of open) session.close();
	}
}

// ---------------------------------------------------------------- report

/**
 * What a scenario's run recorded, kept in the run's summary (`--analyse` reads it back).
 * @typedef {{ scenario: string; what: string; requests: number; seconds: number; p50Ms: number; connections: number;
 *   workerdUsPerRequest: number; workerdBusy: number;
 *   baseline: { requests: number; seconds: number; workerdUsPerRequest: number } | null;
 *   gatewayTarget: string; bundle: string; bundleName: string; profiles: { target: string; file: string; requestedUs: number }[] }} Entry
 * @typedef {import("./cpuprofile.mjs").Analysis} Analysis
 */

const us = (/** @type {number} */ n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
const pct = (/** @type {number} */ part, /** @type {number} */ whole) => `${((part / whole) * 100).toFixed(1)} %`;
const cell = (/** @type {string} */ s) => s.replace(/\|/g, "\\|");
const gcOf = (/** @type {Analysis} */ a) => a.specialUs["(garbage collector)"] ?? 0;
const programOf = (/** @type {Analysis} */ a) => a.specialUs["(program)"] ?? 0;
const idleOf = (/** @type {Analysis} */ a) => a.specialUs["(idle)"] ?? 0;

/** Buckets listed even when no sample fell in them. */
const ALWAYS_SHOWN = [
	"node_modules/zod",
	"node_modules/hono",
	"node_modules/drizzle-orm",
	"node_modules/jose",
	"native",
	"(garbage collector)",
	"(program)",
];

/**
 * The tables of one scenario's gateway profile, per request.
 * @param {Analysis} a @param {number} n requests served
 */
function gatewayTables(a, n) {
	const per = (/** @type {number} */ x) => x / n;
	const lines = [];
	lines.push(
		"| where (gateway isolate) | self µs/req | share of sampled | inclusive µs/req |",
		"| --- | ---: | ---: | ---: |",
		...[
			...a.buckets,
			...ALWAYS_SHOWN.filter((name) => !a.buckets.some((b) => b.name === name)).map((name) => ({
				name,
				selfUs: 0,
				totalUs: 0,
			})),
		]
			.filter((b) => b.name !== "(idle)" && b.name !== "(root)")
			.map((b) => `| ${cell(b.name)} | ${us(per(b.selfUs))} | ${pct(b.selfUs, a.sampledUs)} | ${us(per(b.totalUs))} |`),
		`| **sampled, not idle** | **${us(per(a.sampledUs))}** | 100 % | |`,
		`| (idle) | ${us(per(idleOf(a)))} | | |`,
		"",
		"| which part of the Worker (stack contains) | self µs/req | share of sampled |",
		"| --- | ---: | ---: |",
		...a.origins.map((o) => `| ${o.name} | ${us(per(o.selfUs))} | ${pct(o.selfUs, a.sampledUs)} |`),
		"",
	);
	const files = a.files.filter((f) => !["(idle)", "(root)"].includes(f.name));
	const shown = files.slice(0, 40);
	const rest = files.slice(40).reduce((x, f) => x + f.selfUs, 0);
	lines.push(
		"| source file | self µs/req | share | inclusive µs/req |",
		"| --- | ---: | ---: | ---: |",
		...shown.map(
			(f) => `| ${cell(f.name)} | ${us(per(f.selfUs))} | ${pct(f.selfUs, a.sampledUs)} | ${us(per(f.totalUs))} |`,
		),
		...(files.length > shown.length
			? [`| (${files.length - shown.length} more files) | ${us(per(rest))} | ${pct(rest, a.sampledUs)} | |`]
			: []),
		"",
	);
	const fn = (/** @type {import("./cpuprofile.mjs").FunctionRow} */ f, /** @type {number} */ i) =>
		`| ${i + 1} | ${cell(f.name)} | ${cell(f.file)}${f.line ? `:${f.line}` : ""} | ${us(per(f.selfUs), 1)} | ${pct(f.selfUs, a.sampledUs)} | ${us(per(f.totalUs))} |`;
	const functions = a.functions.filter((f) => f.bucket !== "(idle)");
	lines.push(
		`Top ${TOP} functions by self time:`,
		"",
		"| # | function | file:line | self µs/req | share | inclusive µs/req |",
		"| ---: | --- | --- | ---: | ---: | ---: |",
		...functions.slice(0, TOP).map(fn),
		"",
		`Top ${TOP} functions of the project (src/, durable-objects/, workers/, bench/worker/) by inclusive time:`,
		"",
		"| # | function | file:line | self µs/req | share | inclusive µs/req |",
		"| ---: | --- | --- | ---: | ---: | ---: |",
		...functions
			.filter((f) => isProjectFile(f.file))
			.sort((x, y) => y.totalUs - x.totalUs)
			.slice(0, TOP)
			.map(fn),
		"",
		"Native functions and workerd's own JavaScript (self time), by the nearest project or package function that called them:",
		"",
		"| # | native ← caller | self µs/req | share |",
		"| ---: | --- | ---: | ---: |",
		...a.nativeCallers
			.slice(0, TOP)
			.map((r, i) => `| ${i + 1} | ${cell(r.name)} | ${us(per(r.selfUs))} | ${pct(r.selfUs, a.sampledUs)} |`),
		"",
		"Packages (self time), by the nearest project function that called them:",
		"",
		"| # | package ← caller | self µs/req | share |",
		"| ---: | --- | ---: | ---: |",
		...a.packageCallers
			.slice(0, TOP)
			.map((r, i) => `| ${i + 1} | ${cell(r.name)} | ${us(per(r.selfUs))} | ${pct(r.selfUs, a.sampledUs)} |`),
		"",
	);
	return lines;
}

/** One line per other profiled isolate. @param {Analysis} a @param {number} n */
function auxLine(a, n) {
	const top = a.functions
		.filter((f) => !["(program)", "(garbage collector)", "(idle)"].includes(f.bucket))
		.slice(0, 3)
		.map((f) => `${f.name} ${us(f.selfUs / n)}`)
		.join(", ");
	return `| ${a.target} | ${a.samples} | ${us(a.sampledUs / n)} | ${us(a.jsUs / n)} | ${us(gcOf(a) / n)} | ${us(programOf(a) / n)} | ${cell(top || "—")} |`;
}

/** The isolates' time per request that is not the gateway's. @param {Analysis[]} others */
const auxSampled = (others) => others.reduce((x, a) => x + a.sampledUs, 0);

/** Prints one scenario's report. @param {Entry} e @param {Map<string, Analysis>} analyses */
function report(e, analyses) {
	const g = analyses.get(e.gatewayTarget);
	if (!g) throw new Error(`no profile of ${e.gatewayTarget} for ${e.scenario}`);
	const n = e.requests;
	const others = [...analyses.values()].filter((a) => a !== g);
	say();
	say(
		`### ${e.scenario}: ${n} requests in ${e.seconds.toFixed(2)} s = ${(n / e.seconds).toFixed(0)} req/s at ${e.connections} connections (p50 ${us(e.p50Ms, 2)} ms), profiled`,
	);
	say();
	say(`${e.what}.`);
	say();
	say(
		`- gateway isolate (${g.target}): ${g.samples} samples, asked every ${g.requestedUs} µs, taken every ${us(g.periodUs, 0)} µs` +
			` (median gap); running **${us(g.sampledUs / n)} µs/req** = JS ${us(g.jsUs / n)} + GC ${us(gcOf(g) / n)}` +
			` + (program) ${us(programOf(g) / n)}; (idle) ${us(idleOf(g) / n)} µs/req besides. Counting each sample as the` +
			` gap to the next up to ${5 * g.requestedUs} µs (samples a starved sampler thread skipped): ${us(g.upperUs / n)} µs/req.`,
	);
	say(
		`- Miniflare's own Workers (${others.length} isolates profiled): running ${us(auxSampled(others) / n)} µs/req.` +
			` workerd's process CPU over the profiled run (/proc, all threads): **${us(e.workerdUsPerRequest)} µs/req**` +
			` (${us(e.workerdBusy * 100, 0)} % of one core); the rest is workerd's C++ outside any isolate's lock (sockets, HTTP,` +
			" subrequests, SQLite, the inspector) and the sampling itself.",
	);
	if (e.baseline) {
		const b = e.baseline;
		say(
			`- the same load without the profilers, just before: ${(b.requests / b.seconds).toFixed(0)} req/s, workerd CPU` +
				` ${us(b.workerdUsPerRequest)} µs/req: profiling costs ×${us(e.workerdUsPerRequest / b.workerdUsPerRequest, 2)}` +
				" in workerd CPU per request (the distribution is what the profile is for, not the totals).",
		);
	}
	say(
		"- with the inspector on, every console.log also goes through V8's inspector (a console message is built and" +
			" stored), so `log` (src/http/logger.ts) and its native callee read dearer than they are without one.",
	);
	const gwFile = e.profiles.find((p) => p.target === e.gatewayTarget)?.file;
	say(`- raw profiles: ${gwFile} (the gateway's), and ${e.profiles.length - 1} more beside it`);
	say();
	for (const line of gatewayTables(g, n)) say(line);
	if (others.length) {
		say("Miniflare's own Workers (other isolates of the same workerd process), µs per request:");
		say();
		say("| isolate | samples | running | JS | GC | (program) | top functions (self µs/req) |");
		say("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
		for (const a of others.sort((x, y) => y.sampledUs - x.sampledUs)) say(auxLine(a, n));
		say();
	}
}

/** Prints the scenarios side by side. @param {{ e: Entry; analyses: Map<string, Analysis> }[]} runs */
function sideBySide(runs) {
	say("### Scenarios side by side (µs per request; profiled runs)");
	say();
	say(
		"| scenario | req/s | gateway running | JS | GC | (program) | Miniflare's Workers | workerd CPU (/proc) | unprofiled workerd CPU |",
	);
	say("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
	for (const { e, analyses } of runs) {
		const g = /** @type {Analysis} */ (analyses.get(e.gatewayTarget));
		const n = e.requests;
		const others = [...analyses.values()].filter((a) => a !== g);
		say(
			`| ${e.scenario} | ${(n / e.seconds).toFixed(0)} | ${us(g.sampledUs / n)} | ${us(g.jsUs / n)} | ${us(gcOf(g) / n)} | ${us(programOf(g) / n)} | ${us(auxSampled(others) / n)} | ${us(e.workerdUsPerRequest)} | ${e.baseline ? us(e.baseline.workerdUsPerRequest) : "—"} |`,
		);
	}
	say();
}

/** Analyses an entry's profiles against its bundle's map. @param {Entry} e */
function analyseEntry(e) {
	const map = new SourceMap(join(ROOT, `${e.bundle}.map`));
	const bundleText = readFileSync(join(ROOT, e.bundle), "utf8").split("\n");
	const name = e.bundleName;
	const bundleUrl = (/** @type {string} */ url) => url === name || url.endsWith(`/${name}`);
	/** @type {Map<string, Analysis>} */
	const analyses = new Map();
	for (const p of e.profiles) {
		const profile = JSON.parse(readFileSync(join(ROOT, p.file), "utf8"));
		analyses.set(
			p.target,
			analyse(profile, { target: p.target, requestedUs: p.requestedUs, bundleUrl, map, bundleText, root: ROOT }),
		);
	}
	return analyses;
}

// ---------------------------------------------------------------- the run

/** Re-prints the report of an earlier run from its summary file. @param {string} file */
function reanalyse(file) {
	/** @type {{ entries: Entry[] }} */
	const { entries } = JSON.parse(readFileSync(file, "utf8"));
	const runs = entries.map((e) => ({ e, analyses: analyseEntry(e) }));
	for (const r of runs) report(r.e, r.analyses);
	if (runs.length > 1) sideBySide(runs);
}

/** One load run, profiled when `profiled` is given, with workerd's CPU time over it (/proc). @param {Scenario} s @param {number} seconds @param {{ workerd: number[] }} pids */
async function measured(s, seconds, pids, /** @type {ToProfile[] | null} */ profiled) {
	const cpu0 = cpuNow(pids);
	const out = profiled
		? await profiling(profiled, () => drive(s, seconds))
		: { result: await drive(s, seconds), profiles: new Map() };
	const cpu1 = cpuNow(pids);
	const cpuMs = cpu1.workerd - cpu0.workerd;
	return {
		...out,
		workerdUsPerRequest: (cpuMs * 1000) / out.result.served,
		workerdBusy: cpuMs / (out.result.seconds * 1000),
	};
}

async function main() {
	if (args.text.analyse) return reanalyse(args.text.analyse);
	const loadBefore = loadAverage();
	const needsStub = SCENARIOS.some((s) => s !== "webhook");
	say("profile: building the benchmarks' Worker bundle if it is stale…");
	const built = await buildWorker("auto", BENCH_MAIN);
	const stamp = new Date().toISOString().replace(/[:.]/g, "-");
	mkdirSync(OUT_DIR, { recursive: true });
	// The profiles are read against this copy of the bundle and its map, so a later rebuild does not break --analyse.
	const bundle = join(OUT_DIR, `${stamp}-${basename(built)}`);
	copyFileSync(built, bundle);
	copyFileSync(`${built}.map`, `${bundle}.map`);
	const port = await freePort();
	const logs = workerLogTally();
	const upstream = needsStub ? await startStubProcess() : undefined;
	/** @type {{ e: Entry; analyses: Map<string, Analysis> }[]} */
	const runs = [];
	try {
		const restore = workerdWithInspector(port);
		let gw;
		try {
			say(`profile: starting the gateway under Miniflare, workerd's inspector on 127.0.0.1:${port}…`);
			gw = await startGateway({
				main: BENCH_MAIN,
				build: "never",
				assets: false,
				bindings: upstream
					? {
							// As bench/llm.mjs: routing as deployed (the schema's defaults), not the e2e tests' short timeouts.
							LLM_CONFIG: JSON.stringify(llmConfigFor(upstream.stub, { routing: {} })),
							OPENAI_API_KEY: GATEWAY_OPENAI_KEY,
							BENCH_PASSTHROUGH_URL: `${upstream.stub.openaiBaseUrl}/chat/completions`,
						}
					: {},
				onLog: logs.onLog,
			});
		} finally {
			restore();
		}
		try {
			const { chosen: profiled, all, gatewayTarget } = await chooseTargets(port);
			say(`profile: inspector targets ${all.join(", ")}`);
			say(`profile: profiling ${profiled.map((p) => `${p.id} (every ${p.interval} µs)`).join(", ")}`);
			const make = await scenariosFor(gw);
			const pids = { workerd: workerdPids() };
			for (const [i, name] of SCENARIOS.entries()) {
				if (i > 0) await sleep(SETTLE_MS);
				const s = await /** @type {() => Promise<Scenario>} */ (make.get(name))();
				await checkOnce(s);
				say(`profile [${name}]: ${s.what}`);
				say(
					`profile [${name}]: warm-up ${WARMUP_S} s${args.flag["no-baseline"] ? "" : `, ${DURATION_S} s unprofiled`}, then ${DURATION_S} s profiled, ${CONNECTIONS} connections…`,
				);
				await drive(s, WARMUP_S);
				const baseline = args.flag["no-baseline"] ? null : await measured(s, DURATION_S, pids, null);
				if (baseline) await sleep(SETTLE_MS);
				const run = await measured(s, DURATION_S, pids, profiled);
				/** @type {Entry["profiles"]} */
				const files = [];
				for (const [id, profile] of run.profiles) {
					const file = join(OUT_DIR, `${stamp}-${name}-${id.replace(/[^\w.-]+/g, "_")}.cpuprofile`);
					writeFileSync(file, JSON.stringify(profile));
					files.push({
						target: id,
						file: relative(ROOT, file),
						requestedUs: /** @type {ToProfile} */ (profiled.find((p) => p.id === id)).interval,
					});
				}
				/** @type {Entry} */
				const e = {
					scenario: name,
					what: s.what,
					requests: run.result.served,
					seconds: run.result.seconds,
					p50Ms: percentile(run.result.times, 50),
					connections: CONNECTIONS,
					workerdUsPerRequest: run.workerdUsPerRequest,
					workerdBusy: run.workerdBusy,
					baseline: baseline
						? {
								requests: baseline.result.served,
								seconds: baseline.result.seconds,
								workerdUsPerRequest: baseline.workerdUsPerRequest,
							}
						: null,
					gatewayTarget,
					bundle: relative(ROOT, bundle),
					bundleName: basename(built),
					profiles: files,
				};
				const analyses = analyseEntry(e);
				report(e, analyses);
				runs.push({ e, analyses });
			}
		} finally {
			await gw.dispose();
		}
	} finally {
		await upstream?.stop();
	}
	if (runs.length > 1) sideBySide(runs);
	const facts = machineFacts(loadBefore);
	say(
		`profile: nproc ${facts.nproc}; load ${facts.load}; Node ${facts.node}; ${facts.versions}; Worker log lines by level ${JSON.stringify(logs.byLevel)}`,
	);
	for (const line of logs.notable) say(`  ${line}`);
	const summaryFile = join(OUT_DIR, `${stamp}-summary.json`);
	writeFileSync(summaryFile, JSON.stringify({ facts, options: args, entries: runs.map((r) => r.e) }, null, 1));
	say(`profile: wrote ${summaryFile} (re-print the report with --analyse ${summaryFile})`);
}

await main();
