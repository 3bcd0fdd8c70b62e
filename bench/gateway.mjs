// @ts-check
/**
 * `npm run bench`: what the edge checks cost. Runs the built Worker under Miniflare's own HTTP listener
 * (no `wrangler dev` proxy), in two configurations (the Worker alone, and behind its static-assets
 * layer), and measures in each:
 *   1. throughput and latency under load (autocannon, rounds of ABBA order: /healthz, /v1/me, /v1/me, /healthz),
 *      for GET /healthz (no checks) and the JWT-protected, rate-limited GET /v1/me;
 *   2. the median latency the edge checks add with one request in flight: sequential requests,
 *      alternating the two routes, each timed with process.hrtime.
 * Writes the figures, and how they were taken, into the marked section of bench/RESULTS.md.
 *
 * Options: --duration <s> (per autocannon run, default 3), --rounds <n> (ABBA rounds, default 2),
 * --connections <n> (default 10), --samples <n> (sequential requests per route, default 2000),
 * --no-write (print only).
 * Loads test/helpers/node/gateway.ts through Node's built-in TypeScript type stripping (Node ≥ 22.18).
 */
import { buildWorker, startGateway } from "../test/helpers/node/gateway.ts";
import {
	BENCH_LIMITS,
	benchArgs,
	loadAverage,
	machineFacts,
	median,
	ms,
	pass,
	percentile,
	runAutocannon,
	say,
	workerLogTally,
	writeResults,
} from "./lib.mjs";

const args = benchArgs({
	counts: { duration: 3, rounds: 2, connections: 10, samples: 2000 },
	flags: ["no-write"],
});
const DURATION_S = args.count.duration;
const CONNECTIONS = args.count.connections;
const SAMPLES = args.count.samples;
const ROUNDS = args.count.rounds;
const WARMUP_S = 2;
const SEQUENTIAL_WARMUP = 300;
/** Targets from the issue. */
const TARGET_RATIO = 0.7;
const TARGET_ADDED_MS = 0.3;

/**
 * One autocannon run. Latency percentiles are computed from every response's own time (fractional ms,
 * from autocannon's `response` events), not from autocannon's 1 ms-resolution histogram.
 * @param {string} label @param {URL} url @param {Record<string, string>} headers @param {number} seconds
 */
async function load(label, url, headers, seconds) {
	const { result, times, statuses, ok } = await runAutocannon({
		url: url.href,
		headers,
		connections: CONNECTIONS,
		pipelining: 1,
		duration: seconds,
	});
	return {
		label,
		seconds: result.duration,
		responses: times.length,
		ok,
		non2xx: times.length - ok,
		errors: result.errors + result.timeouts,
		statuses,
		rps: ok / result.duration,
		p50: percentile(times, 50),
		p99: percentile(times, 99),
	};
}

/** One request, timed from before fetch() to the last byte of the body. @param {URL} url @param {RequestInit} init */
async function timed(url, init) {
	const start = process.hrtime.bigint();
	const res = await fetch(url, init);
	await res.arrayBuffer();
	const ms = Number(process.hrtime.bigint() - start) / 1e6;
	if (res.status !== 200) throw new Error(`${url.pathname}: HTTP ${res.status} during the sequential run`);
	return ms;
}

/**
 * The two configurations measured. The static-assets layer is how wrangler.toml serves `public/`: Miniflare
 * emulates it with a router and an asset Worker in front of the gateway, which costs more than the gateway
 * itself on this kind of machine, so the gateway is also measured alone, where the edge checks' share shows.
 */
const CONFIGS = [
	{ key: "worker", title: "Worker alone (static-assets layer off)", assets: false },
	{ key: "assets", title: "Worker behind its static-assets layer (as configured in wrangler.toml)", assets: true },
];

/** Measures one configuration. @param {(typeof CONFIGS)[number]} config */
async function measure(config) {
	const logs = workerLogTally();
	say(`bench [${config.key}]: starting the gateway under Miniflare (${config.title})…`);
	const gw = await startGateway({ assets: config.assets, onLog: logs.onLog });
	try {
		await gw.seedTenant({ id: "bench", tier: "enterprise", limits: BENCH_LIMITS });
		const token = await gw.mintJwt({ tenantId: "bench", scopes: ["api:read"], tier: "enterprise", expiresInS: 3600 });
		const healthz = new URL("/healthz", gw.url);
		const me = new URL("/v1/me", gw.url);
		const auth = { authorization: `Bearer ${token}` };
		for (const [url, headers] of /** @type {const} */ ([
			[healthz, {}],
			[me, auth],
		])) {
			const res = await fetch(url, { headers });
			const body = await res.text();
			if (res.status !== 200) throw new Error(`${url.pathname} answered ${res.status}: ${body}`);
		}
		say(
			`bench [${config.key}]: ${gw.url.href}; warm-up ${WARMUP_S} s per route, then ${ROUNDS} × ABBA runs of ${DURATION_S} s…`,
		);
		await load("warm-up /healthz", healthz, {}, WARMUP_S);
		await load("warm-up /v1/me", me, auth, WARMUP_S);

		/** @type {Awaited<ReturnType<typeof load>>[]} */
		const runs = [];
		/** @type {[string, URL, Record<string, string>][]} */
		const abba = [
			["/healthz", healthz, {}],
			["/v1/me", me, auth],
			["/v1/me", me, auth],
			["/healthz", healthz, {}],
		];
		for (const [label, url, headers] of Array.from({ length: ROUNDS }, () => abba).flat()) {
			const r = await load(label, url, headers, DURATION_S);
			say(
				`  ${label.padEnd(9)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${ms(r.p50, 3)} ms  p99 ${ms(r.p99, 3)} ms  non-2xx ${r.non2xx}  errors ${r.errors}`,
			);
			runs.push(r);
		}
		const byRoute = (/** @type {string} */ label) => {
			const rs = runs.filter((r) => r.label === label);
			const sum = (/** @type {(r: (typeof rs)[number]) => number} */ f) => rs.reduce((n, r) => n + f(r), 0);
			return {
				rps: sum((r) => r.ok) / sum((r) => r.seconds),
				runs: rs.map((r) => Math.round(r.rps)),
				p50: sum((r) => r.p50) / rs.length,
				p99: sum((r) => r.p99) / rs.length,
				non2xx: sum((r) => r.non2xx),
				errors: sum((r) => r.errors),
				statuses: rs.map((r) => r.statuses),
			};
		};

		say(`bench [${config.key}]: one request in flight, ${SAMPLES} sequential requests per route, alternating…`);
		for (let i = 0; i < SEQUENTIAL_WARMUP; i++) {
			await timed(healthz, {});
			await timed(me, { headers: auth });
		}
		/** @type {number[]} */
		const seqH = [];
		/** @type {number[]} */
		const seqP = [];
		for (let i = 0; i < SAMPLES; i++) {
			// Alternate which goes first, so neither route always follows the other.
			if (i % 2 === 0) {
				seqH.push(await timed(healthz, {}));
				seqP.push(await timed(me, { headers: auth }));
			} else {
				seqP.push(await timed(me, { headers: auth }));
				seqH.push(await timed(healthz, {}));
			}
		}
		seqH.sort((a, b) => a - b);
		seqP.sort((a, b) => a - b);
		const h = byRoute("/healthz");
		const p = byRoute("/v1/me");
		return {
			config,
			h,
			p,
			ratio: p.rps / h.rps,
			seqH: { p50: median(seqH), p90: percentile(seqH, 90), p99: percentile(seqH, 99) },
			seqP: { p50: median(seqP), p90: percentile(seqP, 90), p99: percentile(seqP, 99) },
			added: median(seqP) - median(seqH),
			workerLogs: logs.byLevel,
		};
	} finally {
		await gw.dispose();
	}
}

async function main() {
	const started = Date.now();
	const loadBefore = loadAverage();
	say("bench: building the Worker bundle if it is stale…");
	await buildWorker();
	const results = [];
	for (const config of CONFIGS) results.push(await measure(config));

	const totalS = (Date.now() - started) / 1000;
	const facts = machineFacts(loadBefore);

	const table = [
		"| configuration | route | req/s (runs) | p50 ms | p99 ms | non-2xx | errors |",
		"| --- | --- | ---: | ---: | ---: | ---: | ---: |",
		...results.flatMap((r) => [
			`| ${r.config.key} | GET /healthz | ${r.h.rps.toFixed(0)} (${r.h.runs.join(", ")}) | ${ms(r.h.p50, 2)} | ${ms(r.h.p99, 2)} | ${r.h.non2xx} | ${r.h.errors} |`,
			`| ${r.config.key} | GET /v1/me | ${r.p.rps.toFixed(0)} (${r.p.runs.join(", ")}) | ${ms(r.p.p50, 2)} | ${ms(r.p.p99, 2)} | ${r.p.non2xx} | ${r.p.errors} |`,
		]),
	];
	const seqTable = [
		"| configuration | route | median ms | p90 ms | p99 ms |",
		"| --- | --- | ---: | ---: | ---: |",
		...results.flatMap((r) => [
			`| ${r.config.key} | GET /healthz | ${ms(r.seqH.p50, 3)} | ${ms(r.seqH.p90, 3)} | ${ms(r.seqH.p99, 3)} |`,
			`| ${r.config.key} | GET /v1/me | ${ms(r.seqP.p50, 3)} | ${ms(r.seqP.p90, 3)} | ${ms(r.seqP.p99, 3)} |`,
		]),
	];
	const summary = results.flatMap((r) => [
		`- **${r.config.key}** — ${r.config.title}: /v1/me keeps **${(r.ratio * 100).toFixed(1)} %** of /healthz throughput` +
			` (target ≥ ${TARGET_RATIO * 100} %: ${pass(r.ratio >= TARGET_RATIO)}); the edge checks add **${ms(r.added, 3)} ms**` +
			` at the median with one request in flight (target ≤ ${TARGET_ADDED_MS} ms: ${pass(r.added <= TARGET_ADDED_MS)}).` +
			` Non-2xx during the /v1/me runs: ${r.p.non2xx}${r.p.non2xx ? ` (${JSON.stringify(r.p.statuses)})` : ""};` +
			` connection errors: ${r.p.errors + r.h.errors}; Worker log lines by level: ${JSON.stringify(r.workerLogs)}.`,
	]);
	const section = [
		`## Latest run: ${facts.date}`,
		"",
		...summary,
		"",
		`### Under load (autocannon, ${CONNECTIONS} connections, pipelining 1, ${ROUNDS} × ABBA runs of ${DURATION_S} s)`,
		"",
		...table,
		"",
		`### One request in flight (${SAMPLES} sequential requests per route)`,
		"",
		...seqTable,
		"",
		"### How these figures were taken",
		"",
		'- The Worker is the bundle `wrangler deploy --dry-run --env=""` builds (top-level environment of wrangler.toml,',
		"  minified as deployed), run by `new Miniflare(...)` (workerd) with the local D1, R2, queue and RateLimiter",
		"  Durable Object, driven through **Miniflare's own HTTP listener** on 127.0.0.1 (no `wrangler dev` proxy).",
		"  `worker`: the static-assets layer is left out, so requests reach the gateway directly. `assets`: `public/` is",
		"  served as configured, and Miniflare's emulation of the assets router sits in front of every request.",
		"  Client and server share the machine; the Worker's log lines are read and dropped by Miniflare in this process.",
		`- Load: autocannon (programmatic) in the same Node process, ${CONNECTIONS} keep-alive connections, pipelining 1,`,
		`  ${DURATION_S} s per run after a ${WARMUP_S} s warm-up per route; ${ROUNDS} rounds of ABBA order (/healthz, /v1/me,`,
		"  /v1/me, /healthz), so slow drift of the shared machine falls on both routes alike.",
		"  req/s = 2xx responses ÷ run time over all of a route's runs (each run in brackets); p50/p99 = the mean over",
		"  its runs of the percentile of every response's own time (autocannon `response` events, fractional ms).",
		`- One request in flight: ${SEQUENTIAL_WARMUP} warm-up pairs, then ${SAMPLES} requests per route with Node's fetch`,
		"  (one keep-alive connection), alternating routes and which goes first; each timed with `process.hrtime.bigint()`",
		"  from before `fetch()` to the end of the body. Added latency = median(/v1/me) − median(/healthz).",
		"- /v1/me carries an HS256 JWT of an enterprise tenant whose limits are set far above the run (no 429s). Both routes",
		"  run request id, access log, security headers, CORS and the header limit; /v1/me adds authentication (JWT",
		"  verification, cached per isolate), the tenant (D1, cached 5 s), scope, tier plane, body limit, JSON check and",
		"  leased admission (RateLimiter Durable Object, one round trip per lease of up to 100 tokens).",
		`- Machine: nproc ${facts.nproc}; ${facts.cpu}; ${facts.memory}; ${facts.platform}; load ${facts.load}.`,
		`- Node ${facts.node}; ${facts.versions}. Whole run: ${totalS.toFixed(0)} s.`,
	];

	say();
	say(`Gateway benchmark (${facts.date}; nproc ${facts.nproc}; Node ${facts.node}; Miniflare's own listener)`);
	say();
	for (const line of [...table, "", ...seqTable, "", ...summary]) say(line);
	say();

	if (!args.flag["no-write"]) writeResults("bench/gateway.mjs", section);
}

await main();
