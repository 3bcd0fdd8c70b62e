import { buildWorker, startGateway } from "../test/helpers/node/gateway.ts";
import { GATEWAY_OPENAI_KEY, llmConfigFor } from "../test/helpers/node/llm.ts";
import { OK_TEXT, SYSTEM_FINGERPRINT } from "../test/helpers/node/llm-stub.ts";
import { mulberry32 } from "../test/helpers/random.ts";
import {
	BENCH_LIMITS,
	BENCH_MAIN,
	benchArgs,
	cpuNow,
	loadAverage,
	machineFacts,
	median,
	ms,
	pass,
	percentile,
	runAutocannon,
	say,
	sleep,
	workerdPids,
	workerLogTally,
	writeResults,
} from "./lib.mjs";
import { PORTKEY_VERSION, portkeyFirstChunkWaitMs } from "./portkey/build.mjs";
import { startPortkey } from "./portkey/start.mjs";
import { startStubProcess } from "./setup.mjs";

const args = benchArgs({
	counts: { duration: 5, rounds: 2, connections: 50, samples: 1500, "body-bytes": 1024 },
	flags: ["no-extras", "no-portkey", "no-write"],
});
const DURATION_S = args.count.duration;
const ROUNDS = args.count.rounds;
const CONNECTIONS = args.count.connections;
const SAMPLES = args.count.samples;
const BODY_BYTES = args.count["body-bytes"];
const EXTRAS = !args.flag["no-extras"];
const PORTKEY = !args.flag["no-portkey"];
/** The sleep Portkey's stream reader takes before a stream's first chunk (25 ms in 1.15.2), read from its package. */
const PORTKEY_WAIT_MS = PORTKEY ? portkeyFirstChunkWaitMs() : undefined;
if (BODY_BYTES < 400) throw new Error("--body-bytes must be at least 400 (the body's fixed part)");
const WARMUP_S = 2;
/**
 * Sequential requests per route before the timed ones, in each sequential phase. The load runs before them have
 * warmed every route already; 100 (was 200) keeps a default run with Portkey's row within about six minutes.
 */
const SEQUENTIAL_WARMUP = 100;
/** Bounded wait for the usage records of the run to reach D1 (they are batched per isolate, then queued). */
const USAGE_SETTLE_MS = 3_000;
const USAGE_TIMEOUT_MS = 60_000;

/** Written once, above the marked section, when the file has no such section yet. */
const INTRO = [
	"## LLM plane (`npm run bench:llm`)",
	"",
	"`npm run bench:llm` (bench/llm.mjs) measures, in one run against one stub upstream, a chat completion sent",
	"straight to the stub, through the Worker's bare pass-through route (`/__bench/passthrough`: one subrequest, no",
	"checks), through the full LLM plane (`/v1/chat/completions`, everything on), and through the Portkey AI gateway",
	"(npm `@portkey-ai/gateway`, built for Workers by bench/portkey/ and run under the same Miniflare and workerd), a",
	"same-runtime peer. The section between its markers is rewritten by each run.",
	"",
	"Targets (from the issue): the plane keeps ≥ 80 % of the pass-through's requests/s at 50 connections; it adds",
	"≤ 1 ms over the pass-through at the median with one request in flight, and ≤ 2 ms to a stream's first byte.",
].join("\n");
/** Targets from the issue. */
const TARGET_RATIO = 0.8;
const TARGET_ADDED_MS = 1;
const TARGET_TTFB_MS = 2;

/** A signed difference. @param {number} n */
const delta = (n, digits = 3) => (Number.isFinite(n) ? `${n >= 0 ? "+" : "−"}${Math.abs(n).toFixed(digits)}` : "n/a");

// ---------------------------------------------------------------- the stub, in its own process

// ---------------------------------------------------------------- requests

/**
 * A route measured: where it goes, the model it names, its headers, and what an answer must say (`expect`: headers;
 * `relays`: the body is the stub's as it is, so it carries the stub's fingerprint); whose workerd serves it (`cpu`:
 * the gateway's, or Portkey's own); whether it writes the plane's usage records (`plane`).
 * @typedef {{ key: string; label: string; origin: string; path: string; model: string;
 *   headers: Record<string, string>; expect: Record<string, string>; relays: boolean; cpu: "gateway" | "portkey";
 *   plane: boolean }} Route
 */

/**
 * Sent on every route: the body's type, and no compression offered (autocannon offers none; Node's fetch would offer
 * gzip), so no row can be answered compressed.
 */
const COMMON_HEADERS = { "content-type": "application/json", "accept-encoding": "identity" };

/** Words for the prompt: ordinary text that none of the configured guardrails blocks or redacts. */
const PROMPT =
	"Summarise the following notes for a weekly status update. The team finished the migration of the billing " +
	"service, fixed two regressions in the search ranking, and started the design review for the new onboarding " +
	"flow. Next week they plan to load-test the gateway, write the runbook for the on-call rotation, and meet the " +
	"platform group about quotas. Keep it short, in plain words, and list open questions at the end. ";

let sequence = 0;
const RUN = Date.now().toString(36);

/**
 * A chat request of exactly `BODY_BYTES` bytes (compact JSON, ASCII), whatever the model's name, whose user
 * message is unique (a run id and a counter): no two requests of a run share a cache key.
 * @param {string} model @param {boolean} stream
 */
function chatBody(model, stream) {
	const n = sequence++;
	const shape = (/** @type {string} */ content) =>
		JSON.stringify({
			model,
			messages: [
				{ role: "system", content: "You are a concise assistant." },
				{ role: "user", content },
			],
			...(stream ? { stream: true } : {}),
		});
	const room = BODY_BYTES - shape("").length;
	const head = `Request ${RUN}-${n}. `;
	if (room < head.length + 40) throw new Error(`--body-bytes ${BODY_BYTES} is too small for model ${model}`);
	const text = `${head}${PROMPT.repeat(Math.ceil(room / PROMPT.length))}`.slice(0, room);
	const body = shape(text);
	if (body.length !== BODY_BYTES) throw new Error(`request body is ${body.length} bytes, not ${BODY_BYTES}`);
	return body;
}

/** @typedef {import("./lib.mjs").AutocannonRequest} AutocannonRequest */

/** autocannon's request list for a route: every request a fresh, unique body. @param {Route} route */
function requestsFor(route) {
	/** @type {AutocannonRequest[]} */
	const requests = [
		{
			method: "POST",
			path: route.path,
			headers: { ...COMMON_HEADERS, ...route.headers },
			setupRequest: (req) => {
				req.body = chatBody(route.model, false);
				return req;
			},
		},
	];
	return requests;
}

/** @param {Route} route @param {boolean} stream @returns {RequestInit} */
function initFor(route, stream) {
	return {
		method: "POST",
		headers: { ...COMMON_HEADERS, ...route.headers },
		body: chatBody(route.model, stream),
	};
}

/** Throws unless the answer is a 200 carrying the route's expected headers. @param {Route} route @param {Response} res */
function check(route, res, /** @type {string} */ body = "") {
	if (res.status !== 200) throw new Error(`${route.label}: HTTP ${res.status} ${body.slice(0, 300)}`);
	for (const [name, value] of Object.entries(route.expect)) {
		const got = res.headers.get(name);
		if (got !== value) throw new Error(`${route.label}: ${name} is ${JSON.stringify(got)}, expected ${value}`);
	}
}

/**
 * Throws unless `body` is the stub's answer: its text (OK_TEXT; a stream's content deltas joined) and, on a route
 * that relays the stub's body as it is, the stub's `system_fingerprint` (in every chunk of a stream) — so a route
 * cannot pass with an answer that did not come from the stub.
 * @param {Route} route @param {string} body @param {boolean} stream
 */
function checkBody(route, body, stream) {
	/** @type {{ system_fingerprint?: unknown; choices?: { message?: { content?: unknown }; delta?: { content?: unknown } }[] }[]} */
	let parts;
	try {
		parts = stream
			? body
					.split("\n")
					.filter((l) => l.startsWith("data: ") && l.trim() !== "data: [DONE]")
					.map((l) => JSON.parse(l.slice("data: ".length)))
			: [JSON.parse(body)];
	} catch {
		throw new Error(
			`${route.label}: the answer is not ${stream ? "a stream of JSON chunks" : "JSON"}: ${body.slice(0, 300)}`,
		);
	}
	const text = parts
		.map((p) => (stream ? p.choices?.[0]?.delta?.content : p.choices?.[0]?.message?.content))
		.filter((c) => typeof c === "string")
		.join("");
	if (text !== OK_TEXT) throw new Error(`${route.label}: the answer's text is ${JSON.stringify(text)}, not the stub's`);
	if (route.relays && (parts.length === 0 || parts.some((p) => p.system_fingerprint !== SYSTEM_FINGERPRINT))) {
		throw new Error(`${route.label}: the answer lacks the stub's system_fingerprint: ${body.slice(0, 300)}`);
	}
}

/** One request, from before fetch() to the last byte of the body. @param {Route} route */
async function timed(route) {
	const init = initFor(route, false);
	const start = process.hrtime.bigint();
	const res = await fetch(new URL(route.path, route.origin), init);
	const body = await res.arrayBuffer();
	const elapsed = Number(process.hrtime.bigint() - start) / 1e6;
	const text = Buffer.from(body).toString();
	check(route, res, text);
	checkBody(route, text, false);
	return elapsed;
}

const decoder = new TextDecoder();

/**
 * One streamed request: from before fetch() to the first non-empty chunk of the body. The rest is read (and
 * must end with `[DONE]`) before the next request, untimed.
 * @param {Route} route
 */
async function firstByte(route) {
	const init = initFor(route, true);
	const start = process.hrtime.bigint();
	const res = await fetch(new URL(route.path, route.origin), init);
	if (!res.body) throw new Error(`${route.label}: no body`);
	const reader = res.body.getReader();
	let chunk = await reader.read();
	while (!chunk.done && chunk.value.byteLength === 0) chunk = await reader.read();
	const elapsed = Number(process.hrtime.bigint() - start) / 1e6;
	let text = chunk.done ? "" : decoder.decode(chunk.value, { stream: true });
	for (chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
		text += decoder.decode(chunk.value, { stream: true });
	}
	check(route, res, text);
	if (!/^text\/event-stream/.test(res.headers.get("content-type") ?? "")) {
		throw new Error(`${route.label}: a stream answered ${res.headers.get("content-type")}`);
	}
	if (!text.trimEnd().endsWith("data: [DONE]")) throw new Error(`${route.label}: the stream did not end with [DONE]`);
	checkBody(route, text, true);
	return elapsed;
}

// ---------------------------------------------------------------- load

/**
 * One autocannon run, with latency percentiles from every response's own time and its time measured from the
 * start to the last response; CPU time over the run of the workerd that serves the route (the gateway's, with its
 * D1, Durable Objects, cache and queue; or Portkey's own) and of the other one (`otherMs`: its background work, e.g.
 * the gateway's queue consumer still writing usage rows), of the stub's process and of this Node process. Any
 * non-2xx answer or connection error invalidates the run: it throws.
 * @param {string} label @param {Route} route @param {number} seconds
 * @param {{ gateway: number[]; portkey: number[]; stub: number[] }} pids
 */
async function load(label, route, seconds, pids) {
	const cpu0 = cpuNow(pids);
	const { result, times, statuses, ok, started, last } = await runAutocannon({
		url: route.origin,
		duration: seconds,
		requests: requestsFor(route),
		connections: CONNECTIONS,
		pipelining: 1,
	});
	const wall = last - started;
	const cpu1 = cpuNow(pids);
	const own = route.cpu;
	const other = own === "gateway" ? "portkey" : "gateway";
	const run = {
		label,
		route: route.key,
		seconds: wall / 1000,
		ok,
		non2xx: times.length - ok,
		errors: result.errors,
		timeouts: result.timeouts,
		statuses,
		rps: ok / (wall / 1000),
		/** CPU ms per 2xx; busy = CPU time ÷ wall time (1 = one core busy all the time). */
		workerdMs: (cpu1[own] - cpu0[own]) / ok,
		workerdBusy: (cpu1[own] - cpu0[own]) / wall,
		/** The other workerd's CPU ms over the run ÷ this route's 2xx (NaN when there is none). */
		otherMs: pids[other].length ? (cpu1[other] - cpu0[other]) / ok : Number.NaN,
		stubMs: (cpu1.stub - cpu0.stub) / ok,
		nodeMs: (cpu1.node - cpu0.node) / ok,
		p50: percentile(times, 50),
		p99: percentile(times, 99),
	};
	if (run.non2xx > 0 || run.errors > 0 || run.timeouts > 0 || ok === 0) {
		throw new Error(
			`INVALID RUN: ${label} (${route.label}) got statuses ${JSON.stringify(statuses)}, ${run.errors} connection errors, ${run.timeouts} timeouts`,
		);
	}
	return run;
}

/**
 * Sequential requests, one in flight, `SEQUENTIAL_WARMUP` + `SAMPLES` per route; each turn sends one request per
 * route in a freshly shuffled order, so every route follows every other alike (the plane's background work —
 * cache write, budget settlement, usage — falls on whichever request comes next, whatever its route).
 * @param {Route[]} routes @param {(route: Route) => Promise<number>} one
 */
async function sequential(routes, one) {
	/** @type {Map<string, number[]>} */
	const times = new Map(routes.map((r) => [r.key, []]));
	const random = mulberry32(4);
	const order = [...routes];
	for (let i = 0; i < SEQUENTIAL_WARMUP + SAMPLES; i++) {
		for (let j = order.length - 1; j > 0; j--) {
			const k = Math.floor(random() * (j + 1));
			[order[j], order[k]] = [/** @type {Route} */ (order[k]), /** @type {Route} */ (order[j])];
		}
		for (const route of order) {
			const t = await one(route);
			if (i >= SEQUENTIAL_WARMUP) times.get(route.key)?.push(t);
		}
	}
	/** @type {Map<string, { n: number; p50: number; p90: number; p99: number }>} */
	const out = new Map();
	for (const [key, values] of times) {
		const s = [...values].sort((a, b) => a - b);
		out.set(key, { n: s.length, p50: median(s), p90: percentile(s, 90), p99: percentile(s, 99) });
	}
	return out;
}

// ---------------------------------------------------------------- the run

async function measure() {
	const logs = workerLogTally();
	say("bench: starting the stub upstream in its own process…");
	const upstream = await startStubProcess();
	try {
		say(`bench: stub at ${upstream.stub.url} (pid ${upstream.pid}); starting the gateway under Miniflare…`);
		const directUrl = `${upstream.stub.openaiBaseUrl}/chat/completions`;
		const gw = await startGateway({
			main: BENCH_MAIN,
			assets: false,
			bindings: {
				// Routing as deployed (the schema's defaults: 30 s per attempt), not the e2e tests' short timeouts.
				LLM_CONFIG: JSON.stringify(llmConfigFor(upstream.stub, { routing: {} })),
				OPENAI_API_KEY: GATEWAY_OPENAI_KEY,
				BENCH_PASSTHROUGH_URL: directUrl,
			},
			onLog: logs.onLog,
		});
		try {
			// The gateway's workerd, read before Portkey's Miniflare starts a workerd of its own.
			const gatewayPids = workerdPids();
			const portkeyLogs = workerLogTally();
			const portkey = PORTKEY
				? await startPortkey({ onLog: portkeyLogs.onLog, log: say }).then((pk) => {
						say(`bench: Portkey ${PORTKEY_VERSION} at ${pk.url.origin} (workerd pid ${pk.pids.join(", ") || "?"})`);
						return pk;
					})
				: undefined;
			try {
				return await measureWith(gw, upstream, directUrl, {
					gatewayPids,
					portkey,
					workerLogs: logs.byLevel,
					notable: logs.notable,
					portkeyLogs: portkeyLogs.byLevel,
					portkeyNotable: portkeyLogs.notable,
				});
			} finally {
				await portkey?.dispose();
			}
		} finally {
			await gw.dispose();
		}
	} finally {
		await upstream.stop();
	}
}

/**
 * @param {import("../test/helpers/node/gateway.ts").Gateway} gw
 * @param {Awaited<ReturnType<typeof startStubProcess>>} upstream
 * @param {string} directUrl
 * @param {{ gatewayPids: number[]; portkey: Awaited<ReturnType<typeof startPortkey>> | undefined;
 *   workerLogs: Record<string, number>; notable: string[]; portkeyLogs: Record<string, number>; portkeyNotable: string[] }} side
 */
async function measureWith(gw, upstream, directUrl, side) {
	const { portkey, workerLogs, notable, portkeyLogs, portkeyNotable } = side;
	const db = await gw.db();
	// `bench` has a monthly token budget (reserve and settle run, on the isolate's lease); `bench-nobudget` has none.
	await gw.seedTenant({
		id: "bench",
		tier: "enterprise",
		limits: { ...BENCH_LIMITS, llmBudget: { monthlyTokens: 1_000_000_000_000 } },
	});
	await gw.seedTenant({ id: "bench-nobudget", tier: "enterprise", limits: BENCH_LIMITS });
	// Only for the check that the cache serves a repeated request (its usage is not counted below).
	await gw.seedTenant({ id: "bench-probe", tier: "enterprise", limits: BENCH_LIMITS });
	const jwt = (/** @type {string} */ tenantId) =>
		gw.mintJwt({ tenantId, scopes: ["llm"], tier: "enterprise", sub: `${tenantId}-user`, expiresInS: 3600 });
	const budgeted = `Bearer ${await jwt("bench")}`;
	const unbudgeted = `Bearer ${await jwt("bench-nobudget")}`;
	const gateway = gw.url.origin;
	const plane = (/** @type {"MISS" | "BYPASS"} */ cache) => ({
		"x-edgeway-cache": cache,
		"x-edgeway-provider": "openai",
		"x-edgeway-model": "ok",
		"x-edgeway-attempts": "1",
	});
	const direct = new URL(directUrl);
	/** @type {Route[]} */
	const routes = [
		{
			key: "direct",
			label: "direct to the stub",
			origin: direct.origin,
			path: direct.pathname,
			model: "ok",
			headers: { authorization: "Bearer x" },
			expect: {},
			relays: true,
			cpu: "gateway",
			plane: false,
		},
		{
			key: "passthrough",
			label: "pass-through route",
			origin: gateway,
			path: "/__bench/passthrough",
			model: "ok",
			headers: { "x-upstream-authorization": "Bearer x" },
			expect: {},
			relays: true,
			cpu: "gateway",
			plane: false,
		},
		{
			key: "plane",
			label: "LLM plane",
			origin: gateway,
			path: "/v1/chat/completions",
			model: "openai/ok",
			headers: { authorization: budgeted },
			expect: plane("MISS"),
			relays: false,
			cpu: "gateway",
			plane: true,
		},
	];
	if (portkey) {
		routes.push({
			key: "portkey",
			label: `Portkey gateway ${PORTKEY_VERSION}`,
			origin: portkey.url.origin,
			path: "/v1/chat/completions",
			model: "ok",
			// Portkey's own way of naming the provider and where it is; the key goes to the stub as it is.
			headers: {
				"x-portkey-provider": "openai",
				"x-portkey-custom-host": upstream.stub.openaiBaseUrl,
				authorization: "Bearer x",
			},
			// From openai, with no retry, not from Portkey's cache.
			expect: {
				"x-portkey-provider": "openai",
				"x-portkey-retry-attempt-count": "0",
				"x-portkey-cache-status": "DISABLED",
			},
			relays: true,
			cpu: "portkey",
			plane: false,
		});
	}
	if (EXTRAS) {
		routes.push(
			{
				key: "bypass",
				label: "plane, cache bypassed",
				origin: gateway,
				path: "/v1/chat/completions",
				model: "openai/ok",
				headers: { authorization: budgeted, "x-edgeway-cache": "bypass" },
				expect: plane("BYPASS"),
				relays: false,
				cpu: "gateway",
				plane: true,
			},
			{
				key: "nobudget",
				label: "plane, no budget",
				origin: gateway,
				path: "/v1/chat/completions",
				model: "openai/ok",
				headers: { authorization: unbudgeted },
				expect: plane("MISS"),
				relays: false,
				cpu: "gateway",
				plane: true,
			},
			{
				key: "lean",
				label: "plane, bypass + no budget",
				origin: gateway,
				path: "/v1/chat/completions",
				model: "openai/ok",
				headers: { authorization: unbudgeted, "x-edgeway-cache": "bypass" },
				expect: plane("BYPASS"),
				relays: false,
				cpu: "gateway",
				plane: true,
			},
		);
	}
	const byKey = (/** @type {string} */ key) => /** @type {Route} */ (routes.find((r) => r.key === key));

	// ---- checks before measuring: every route answers, the plane as a MISS from openai; the cache is live
	for (const route of routes) {
		await timed(route);
		await firstByte(route);
	}
	const probe = { ...byKey("plane"), headers: { authorization: `Bearer ${await jwt("bench-probe")}` } };
	const probeInit = initFor(probe, false);
	const first = await fetch(new URL(probe.path, probe.origin), probeInit);
	check(probe, first, await first.text());
	let cacheServes = false;
	// The answer is written to the cache in the background: ask again (bounded) until it is served from there.
	for (let attempt = 0; attempt < 40 && !cacheServes; attempt++) {
		await sleep(50);
		const again = await fetch(new URL(probe.path, probe.origin), probeInit);
		await again.arrayBuffer();
		if (again.status !== 200) throw new Error(`cache probe: HTTP ${again.status}`);
		cacheServes = again.headers.get("x-edgeway-cache") === "HIT";
	}
	if (!cacheServes) throw new Error("the plane's cache never served a repeated request: is it on for this tier?");
	say("bench: checks passed (plane: 200, MISS, openai, 1 attempt; a repeated request is a cache HIT)");

	// ---- under load
	const pids = { gateway: side.gatewayPids, portkey: portkey?.pids ?? [], stub: [upstream.pid] };
	say(`bench: warm-up ${WARMUP_S} s per route, then ${ROUNDS} × ABBA rounds of ${DURATION_S} s runs…`);
	const loadStarted = Date.now();
	for (const route of routes) await load(`warm-up ${route.key}`, route, WARMUP_S, pids);
	const gatewayRoutes = routes.filter((r) => r.key !== "direct");
	// One round: direct once, then the gateway's routes forth and back (A B C … C B A).
	const round = [byKey("direct"), ...gatewayRoutes, ...[...gatewayRoutes].reverse()];
	/** @type {Awaited<ReturnType<typeof load>>[]} */
	const runs = [];
	for (let r = 0; r < ROUNDS; r++) {
		for (const route of round) {
			const run = await load(route.key, route, DURATION_S, pids);
			say(
				`  ${route.key.padEnd(12)} ${run.rps.toFixed(0).padStart(6)} req/s  p50 ${ms(run.p50)} ms  p99 ${ms(run.p99)} ms` +
					`  workerd ${ms(run.workerdMs, 3)} CPU ms/req (busy ${ms(run.workerdBusy)}; other workerd ${ms(run.otherMs, 3)})  stub ${ms(run.stubMs, 3)}` +
					`  node ${ms(run.nodeMs, 3)}  statuses ${JSON.stringify(run.statuses)}`,
			);
			runs.push(run);
		}
	}
	const underLoad = new Map(
		routes.map((route) => {
			const rs = runs.filter((r) => r.route === route.key);
			const sum = (/** @type {(r: (typeof rs)[number]) => number} */ f) => rs.reduce((n, r) => n + f(r), 0);
			/** @type {Record<string, number>} */
			const statuses = {};
			for (const r of rs) for (const [s, n] of Object.entries(r.statuses)) statuses[s] = (statuses[s] ?? 0) + n;
			return [
				route.key,
				{
					rps: sum((r) => r.ok) / sum((r) => r.seconds),
					runs: rs.map((r) => Math.round(r.rps)),
					ok: sum((r) => r.ok),
					p50: sum((r) => r.p50) / rs.length,
					p99: sum((r) => r.p99) / rs.length,
					statuses,
					workerdMs: sum((r) => r.workerdMs * r.ok) / sum((r) => r.ok),
					workerdBusy: sum((r) => r.workerdBusy) / rs.length,
					otherMs: sum((r) => r.otherMs * r.ok) / sum((r) => r.ok),
					stubMs: sum((r) => r.stubMs * r.ok) / sum((r) => r.ok),
					nodeMs: sum((r) => r.nodeMs * r.ok) / sum((r) => r.ok),
				},
			];
		}),
	);

	say(`bench: (${((Date.now() - loadStarted) / 1000).toFixed(0)} s) load runs done`);

	// ---- one request in flight
	say(`bench: one request in flight, ${SAMPLES} sequential requests per route (after ${SEQUENTIAL_WARMUP}), shuffled…`);
	let phase = Date.now();
	const oneInFlight = await sequential(routes, timed);
	say(
		`bench: (${((Date.now() - phase) / 1000).toFixed(0)} s) streams (stream: true), time to the first body byte, ${SAMPLES} per route, shuffled…`,
	);
	phase = Date.now();
	const firstBytes = await sequential(routes, firstByte);
	say(`bench: (${((Date.now() - phase) / 1000).toFixed(0)} s) streams done`);

	// ---- the usage records: every plane request a MISS, in one attempt, answered 200
	say(`bench: waiting (≤ ${USAGE_TIMEOUT_MS / 1000} s) for the usage records to reach D1…`);
	const usageQuery = db.prepare(
		`SELECT COUNT(*) AS n, COALESCE(SUM(cache_hit), 0) AS hits, COALESCE(SUM(attempts <> 1), 0) AS retried,
		 COALESCE(SUM(status <> 200), 0) AS failed FROM llm_usage WHERE tenant_id IN ('bench', 'bench-nobudget')`,
	);
	const deadline = Date.now() + USAGE_TIMEOUT_MS;
	let usage = await usageQuery.first();
	let stableSince = Date.now();
	while (Date.now() < deadline && Date.now() - stableSince < USAGE_SETTLE_MS) {
		await sleep(250);
		const now = await usageQuery.first();
		if (Number(now?.n) !== Number(usage?.n)) stableSince = Date.now();
		usage = now;
	}
	const usageRows = {
		rows: Number(usage?.n),
		hits: Number(usage?.hits),
		retried: Number(usage?.retried),
		failed: Number(usage?.failed),
	};
	const planeOk = routes.filter((r) => r.plane).reduce((n, r) => n + (underLoad.get(r.key)?.ok ?? 0), 0);
	if (usageRows.hits > 0 || usageRows.retried > 0 || usageRows.failed > 0) {
		throw new Error(`INVALID RUN: usage records show ${JSON.stringify(usageRows)} (hits, retries, failures must be 0)`);
	}
	return {
		routes,
		underLoad,
		oneInFlight,
		firstBytes,
		usageRows,
		planeOk,
		workerLogs,
		notable,
		portkeyLogs,
		portkeyNotable,
	};
}

/** A route's figures. @template T @param {Map<string, T>} byRoute @param {string} key @returns {T} */
function figures(byRoute, key) {
	const value = byRoute.get(key);
	if (value === undefined) throw new Error(`no figures for ${key}`);
	return value;
}

async function main() {
	const started = Date.now();
	const loadBefore = loadAverage();
	say("bench: building the Worker bundle if it is stale…");
	await buildWorker("auto", BENCH_MAIN);
	const r = await measure();

	const totalS = (Date.now() - started) / 1000;
	const facts = machineFacts(loadBefore);
	const L = (/** @type {string} */ k) => figures(r.underLoad, k);
	const S = (/** @type {string} */ k) => figures(r.oneInFlight, k);
	const F = (/** @type {string} */ k) => figures(r.firstBytes, k);
	/** What each row is compared with: the pass-through for the plane's rows, the stub for the pass-through. */
	const reference = (/** @type {string} */ k) =>
		k === "direct" ? null : k === "passthrough" ? "direct" : "passthrough";

	const ratio = L("plane").rps / L("passthrough").rps;
	const added = S("plane").p50 - S("passthrough").p50;
	const addedP99 = S("plane").p99 - S("passthrough").p99;
	const addedTtfb = F("plane").p50 - F("passthrough").p50;
	const addedTtfbP99 = F("plane").p99 - F("passthrough").p99;
	const floor = S("passthrough").p50 - S("direct").p50;
	const floorP99 = S("passthrough").p99 - S("direct").p99;

	const loadTable = [
		"| route | req/s (runs) | ÷ pass-through | p50 ms | p99 ms | statuses | workerd CPU ms per 2xx (busy) | other workerd CPU ms per 2xx | stub CPU ms per 2xx | client Node CPU ms per 2xx |",
		"| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
		...r.routes.map((route) => {
			const x = L(route.key);
			const share = route.key === "direct" ? "—" : `${((x.rps / L("passthrough").rps) * 100).toFixed(1)} %`;
			return `| ${route.label} | ${x.rps.toFixed(0)} (${x.runs.join(", ")}) | ${share} | ${ms(x.p50)} | ${ms(x.p99)} | ${JSON.stringify(x.statuses).replace(/"/g, "")} | ${ms(x.workerdMs, 3)} (${ms(x.workerdBusy)}) | ${ms(x.otherMs, 3)} | ${ms(x.stubMs, 3)} | ${ms(x.nodeMs, 3)} |`;
		}),
	];
	const latencyTable = (
		/** @type {(k: string) => { n: number; p50: number; p90: number; p99: number }} */ f,
		/** @type {string} */ what,
	) => [
		`| route | ${what} median ms | p90 ms | p99 ms | added over | added median ms | added p99 ms |`,
		"| --- | ---: | ---: | ---: | --- | ---: | ---: |",
		...r.routes.map((route) => {
			const x = f(route.key);
			const ref = reference(route.key);
			const y = ref ? f(ref) : null;
			const refLabel = ref ? (r.routes.find((q) => q.key === ref)?.label ?? ref) : "—";
			return `| ${route.label} | ${ms(x.p50, 3)} | ${ms(x.p90, 3)} | ${ms(x.p99, 3)} | ${refLabel} | ${y ? delta(x.p50 - y.p50) : "—"} | ${y ? delta(x.p99 - y.p99) : "—"} |`;
		}),
	];
	const seqTable = latencyTable(S, "whole answer:");
	const ttfbTable = latencyTable(F, "first body byte:");
	const summary = [
		`- Throughput at ${CONNECTIONS} connections: the plane serves **${L("plane").rps.toFixed(0)} req/s** against the pass-through's` +
			` ${L("passthrough").rps.toFixed(0)} = **${(ratio * 100).toFixed(1)} %** (target ≥ ${TARGET_RATIO * 100} %: ${pass(ratio >= TARGET_RATIO)});` +
			` straight to the stub: ${L("direct").rps.toFixed(0)} req/s. workerd CPU per request: plane ${ms(L("plane").workerdMs, 3)} ms,` +
			` pass-through ${ms(L("passthrough").workerdMs, 3)} ms (${ms(L("plane").workerdMs / L("passthrough").workerdMs, 1)}×).`,
		`- One request in flight: the plane adds **${ms(added, 3)} ms** at the median over the pass-through (target ≤ ${TARGET_ADDED_MS} ms:` +
			` ${pass(added <= TARGET_ADDED_MS)}) and ${delta(addedP99)} ms at p99. The pass-through itself adds ${delta(floor)} ms (median)` +
			` and ${delta(floorP99)} ms (p99) over going straight to the stub: the Worker's floor for one subrequest here.`,
		`- Streams (\`stream: true\`): the plane adds **${ms(addedTtfb, 3)} ms** to the first body byte at the median over the pass-through` +
			` (target ≤ ${TARGET_TTFB_MS} ms: ${pass(addedTtfb <= TARGET_TTFB_MS)}) and ${delta(addedTtfbP99)} ms at p99.`,
		...(r.routes.some((q) => q.key === "portkey")
			? [
					`- Portkey AI gateway ${PORTKEY_VERSION} (its Worker build, same workerd, same stub, same rounds): **${L("portkey").rps.toFixed(0)} req/s**` +
						` = ${((L("portkey").rps / L("passthrough").rps) * 100).toFixed(1)} % of the pass-through (the plane: ${(ratio * 100).toFixed(1)} %;` +
						` plane ÷ Portkey ${ms(L("plane").rps / L("portkey").rps)}×); workerd CPU per request ${ms(L("portkey").workerdMs, 3)} ms` +
						` (the plane ${ms(L("plane").workerdMs, 3)} ms). One request in flight it adds **${delta(S("portkey").p50 - S("passthrough").p50)} ms**` +
						` at the median and ${delta(S("portkey").p99 - S("passthrough").p99)} ms at p99 over the pass-through (the plane ${ms(added, 3)} and` +
						` ${delta(addedP99)} ms); to a stream's first byte **${delta(F("portkey").p50 - F("passthrough").p50)} ms** at the median and` +
						` ${delta(F("portkey").p99 - F("passthrough").p99)} ms at p99 (the plane ${ms(addedTtfb, 3)} and ${delta(addedTtfbP99)} ms)` +
						(PORTKEY_WAIT_MS === undefined
							? "."
							: `, of which ${PORTKEY_WAIT_MS} ms is Portkey's own wait: its stream reader sleeps ${PORTKEY_WAIT_MS} ms before it passes on` +
								` the first chunk of every stream (\`readStream\`, src/handlers/streamHandler.ts); without it, ${delta(F("portkey").p50 - F("passthrough").p50 - PORTKEY_WAIT_MS)} ms.`),
				]
			: []),
		`- Validity: non-2xx answers 0, connection errors 0, timeouts 0 in every run (any of them stops the run); every` +
			" sequential answer's body was the stub's (its text; the stub's `system_fingerprint` on the" +
			` ${r.routes
				.filter((q) => q.relays)
				.map((q) => `\`${q.label}\``)
				.join(", ")} rows, which relay it as it is); every` +
			` sequential plane answer was 200, \`x-edgeway-cache: MISS\` (or \`BYPASS\` on the bypass rows), \`x-edgeway-provider: openai\`,` +
			` \`x-edgeway-attempts: 1\`${r.routes.some((q) => q.key === "portkey") ? "; every Portkey answer 200, `x-portkey-provider: openai`, `x-portkey-retry-attempt-count: 0`, `x-portkey-cache-status: DISABLED`" : ""}. Usage records in D1 for the measured tenants: ${r.usageRows.rows} (≥ the ${r.planeOk} plane 2xx counted` +
			` under load, plus the sequential ones; a timed run stops with requests in flight), of which cache hits ${r.usageRows.hits},` +
			` retried ${r.usageRows.retried}, not 200 ${r.usageRows.failed}. Worker log lines by level: ${JSON.stringify(r.workerLogs)}` +
			`${r.routes.some((q) => q.key === "portkey") ? `; Portkey's: ${JSON.stringify(r.portkeyLogs)}` : ""}.`,
	];
	const notable = [
		...r.notable.map((m) => `  - \`${m.replace(/`/g, "'")}\``),
		...r.portkeyNotable.map((m) => `  - Portkey: \`${m.replace(/`/g, "'")}\``),
	];
	const extrasNote = EXTRAS
		? [
				"- Extra rows, to attribute the plane's cost (not targets): `plane, cache bypassed` sends `x-edgeway-cache: bypass`",
				"  (no cache key hashing, no cache read, no cache write); `plane, no budget` is an enterprise tenant without a",
				"  `llmBudget` (no reserve or settle, and no budget lease renewals in the RateLimiter Durable Object); `bypass +",
				"  no budget` both.",
			]
		: [];
	const portkeyNote = r.routes.some((q) => q.key === "portkey")
		? [
				`- \`Portkey gateway ${PORTKEY_VERSION}\` = \`POST <portkey>/v1/chat/completions\`, model \`ok\`, with Portkey's own headers`,
				"  `x-portkey-provider: openai`, `x-portkey-custom-host: <stub>/openai/v1` (loopback: a custom host Portkey trusts by",
				"  default, no `TRUSTED_CUSTOM_HOSTS` set) and `authorization: Bearer x`, which it passes to the stub. It is the npm",
				`  package @portkey-ai/gateway ${PORTKEY_VERSION} (a devDependency; the deployed bundle has none of it) built for Workers`,
				"  by bench/portkey/build.mjs: the package's Node bundle (build/start-server.js) up to its Node start-up (listener,",
				"  node-ws, banner), with `export default` of its Hono app, bundled by esbuild (wrangler's copy, minified) with its",
				"  own dependencies, Node built-ins from workerd's `nodejs_compat`, and stubs for the Node-only packages that",
				"  workerd never reaches (ioredis, ws, @hono/node-server, @hono/node-ws). It runs under a Miniflare of its own",
				"  (bench/portkey/start.mjs, bench/portkey/wrangler.toml: the gateway's compatibility date and flags, Portkey's",
				"  [vars]), started as the gateway's is: the same Miniflare and workerd, its own HTTP listener on 127.0.0.1. Its own",
				"  workerd process is the workerd CPU of its row; the gateway's workerd over its runs is the other workerd column",
				"  (and Portkey's over the gateway's runs), so neither is charged for the other's background work. Checked before and throughout the sequential phases: 200, `x-portkey-provider: openai`,",
				"  `x-portkey-retry-attempt-count: 0`, `x-portkey-cache-status: DISABLED`, and the stub's own body.",
				...(PORTKEY_WAIT_MS === undefined
					? []
					: [
							`  Its time to a stream's first byte includes a fixed ${PORTKEY_WAIT_MS} ms: Portkey's stream reader (\`readStream\`,`,
							`  src/handlers/streamHandler.ts) sleeps ${PORTKEY_WAIT_MS} ms (\`setTimeout\`) before the first chunk of every stream,`,
							"  whatever the provider; the figure is reported as measured, with that wait named beside it.",
						]),
			]
		: [];
	const section = [
		`### Latest LLM plane run: ${facts.date}`,
		"",
		...summary,
		...(notable.length ? ["- Worker log lines other than info (first 5):", ...notable] : []),
		"",
		`#### Under load (autocannon, ${CONNECTIONS} connections, pipelining 1, ${ROUNDS} rounds of ${DURATION_S} s runs)`,
		"",
		...loadTable,
		"",
		`#### One request in flight (${SAMPLES} sequential requests per route, not streamed)`,
		"",
		...seqTable,
		"",
		`#### Time to a stream's first body byte (${SAMPLES} sequential streamed requests per route)`,
		"",
		...ttfbTable,
		"",
		"#### How these figures were taken",
		"",
		"- The Worker is the benchmarks' entry workers/bench.ts (the gateway's own handlers plus the pass-through route),",
		'  bundled as `wrangler deploy workers/bench.ts --dry-run --env=""` builds it (top-level environment of wrangler.toml,',
		"  minified as deployed), run by `new Miniflare(...)` (workerd) through test/helpers/node/gateway.ts with the local",
		"  D1, R2, Cache API, the events queue and its consumer, the RateLimiter and CircuitBreaker Durable Objects, driven",
		"  through **Miniflare's own HTTP listener** on 127.0.0.1 (no `wrangler dev` proxy), static-assets layer off.",
		"- The upstream is test/helpers/node/llm-stub.ts (OpenAI format, model `ok`: a fixed short answer with usage;",
		"  streamed as role, text and finish chunks, then `[DONE]`, written at once) in a Node process of its own",
		"  (scripts/llm-stub-server.mjs, `record: false`), so it shares no event loop with the load generator.",
		"- Routes: `direct to the stub` = `POST <stub>/openai/v1/chat/completions` (`authorization: Bearer x`, model `ok`);",
		"  `pass-through route` = `POST <gateway>/__bench/passthrough` (bench/worker/passthrough.ts, enabled by the",
		"  `BENCH_PASSTHROUGH_URL` binding: fetches the stub with the body and `x-upstream-authorization`, returns its body,",
		"  runs none of the app); `LLM plane` = `POST <gateway>/v1/chat/completions`, model `openai/ok`, an HS256 JWT",
		"  (scope `llm`) of the enterprise tenant `bench` with limits far above the run and a monthly token budget of 10¹²",
		"  (so the budget's reserve and settle run: in memory, on the isolate's budget lease, which is renewed in the",
		"  RateLimiter Durable Object when it runs out or after a second), the LLM config of test/helpers/node/llm.ts `llmConfigFor` (input checks:",
		"  secrets, e-mails, a custom pattern, maximum prompt size; output checks: card numbers, e-mails) with the routing",
		"  defaults of src/llm/config.ts, the gateway's own OpenAI key; the tier caches answers, and every request is a MISS.",
		...extrasNote,
		...portkeyNote,
		`- Bodies: every request has a unique user message (a run id and a counter) and is exactly ${BODY_BYTES} bytes of compact`,
		"  JSON on every route (the text is trimmed to make up for the longer model name), streamed requests likewise plus",
		"  `stream: true`; every request sends `accept-encoding: identity`. Checked before measuring and on every sequential",
		"  answer: each route answers 200 with the stub's text (streams: the content deltas, ending with `[DONE]`), the",
		"  direct, pass-through and Portkey rows with the stub's `system_fingerprint`, the plane with `x-edgeway-cache: MISS`,",
		"  `x-edgeway-provider: openai`, one attempt; before measuring, a repeated request (another tenant) is a HIT.",
		"  Bodies are not read under load (autocannon counts statuses only); the stub's CPU per 2xx shows each row's work.",
		`- Load: autocannon (programmatic) in this Node process, ${CONNECTIONS} keep-alive connections, pipelining 1, a`,
		`  ${WARMUP_S} s warm-up per route, then ${ROUNDS} rounds; each round runs \`direct\` once, then the gateway's routes`,
		`  forth and back (${[...r.routes.filter((q) => q.key !== "direct"), ...[...r.routes.filter((q) => q.key !== "direct")].reverse()].map((q) => q.key).join(", ")}),`,
		`  ${DURATION_S} s each, so slow drift of the shared machine falls alike on every gateway route. req/s = 2xx ÷ run time`,
		"  (start to last response) over a route's runs (each run in brackets); p50/p99 = mean over its runs of the",
		"  percentile of every response's own time (autocannon `response` events, fractional ms). CPU = user + system time",
		"  over each run (`/proc/<pid>/stat` for the workerd serving the route and the stub, `process.cpuUsage()` for this",
		"  process, which also reads the Workers' log lines for Miniflare) ÷ the run's 2xx; busy = that workerd's CPU time ÷",
		"  wall time; other workerd = the other Miniflare's workerd over the same run ÷ the run's 2xx.",
		`- One request in flight: Node's fetch (one keep-alive connection per origin), ${SEQUENTIAL_WARMUP} warm-up requests then`,
		`  ${SAMPLES} per route, one request per route in turn, in a new (seeded) shuffled order each turn; each timed with`,
		"  `process.hrtime.bigint()` from before `fetch()` to the end of the body. Streams: the same, with `stream: true`,",
		"  timed from before `fetch()` to the first non-empty chunk of the body (the rest is read, untimed). Added = the",
		"  route's median (p99) − its reference's median (p99). The p99s with one request in flight include stalls from",
		"  background work on workerd's one thread (queue consumer batches writing usage rows, cache writes, budget",
		"  lease renewals), which land on whichever request is in flight: they say more about the machine than the route.",
		`- Machine: nproc ${facts.nproc}; ${facts.cpu}; ${facts.memory}; ${facts.platform}; load ${facts.load}. Client, stub,`,
		"  Miniflare (Node) and workerd share the machine.",
		`- Node ${facts.node}; ${facts.versions}${r.routes.some((q) => q.key === "portkey") ? `, @portkey-ai/gateway ${PORTKEY_VERSION}` : ""}. Whole run: ${totalS.toFixed(0)} s.`,
	];

	say();
	say(`LLM plane benchmark (${facts.date}; nproc ${facts.nproc}; Node ${facts.node}; Miniflare's own listener)`);
	say();
	for (const line of [...loadTable, "", ...seqTable, "", ...ttfbTable, "", ...summary, ...notable]) say(line);
	say();

	if (!args.flag["no-write"]) writeResults("bench/llm.mjs", section, INTRO);
}

await main();
