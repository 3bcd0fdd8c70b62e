// @ts-check
/**
 * `npm run bench:webhooks` (and the second half of `npm run bench`): what a verified webhook delivery
 * costs, end to end. Runs the built Worker under Miniflare's own HTTP listener (no `wrangler dev` proxy),
 * as bench/gateway.mjs does, in two configurations (behind its static-assets layer, as deployed, and the
 * Worker alone), and in each, in ONE gateway run:
 *   1. seeds an enterprise tenant with limits far above the run and registers a GitHub endpoint through
 *      the API (`POST /v1/webhooks/endpoints`, a JWT with scope `webhooks:manage`, no admin);
 *   2. under load (autocannon, 50 connections), ABBA rounds of GET /healthz and of verified GitHub-style
 *      deliveries (`POST /webhooks/{id}`; every request a fresh `x-github-delivery` and one of a pool of
 *      ~2 KB push payloads signed before the run): acknowledged deliveries/s, p50/p99 time to acknowledge,
 *      and the ratio to /healthz;
 *   3. waits (bounded) until every delivery of the load phase is `processed`;
 *   4. time from acknowledgement to the handler's effect: a sample of deliveries to a second endpoint,
 *      sent at a modest rate, polled in D1 until `status = 'processed'`;
 *   5. counts: rows in `webhook_deliveries` per endpoint against the 2xx acknowledgements the client
 *      received (equal: nothing lost, nothing doubled), and how many rows reached `processed`.
 * Writes the figures, and how they were taken, into its own marked section of bench/RESULTS.md.
 *
 * Options: --duration <s> (per autocannon run, default 5), --rounds <n> (ABBA rounds, default 2),
 * --connections <n> (default 50), --body-bytes <n> (payload size, default 2048), --sample <n> (deliveries
 * timed to their effect, default 200), --sample-rate <n> (their rate per second, default 50),
 * --drain-timeout <s> (bounded wait for `processed`, default 120), --configs assets,worker (default both),
 * --no-write (print only).
 * Loads test/helpers/node/gateway.ts through Node's built-in TypeScript type stripping (Node ≥ 22.18).
 */
import { randomUUID } from "node:crypto";
import { buildWorker, githubSignature, registerWebhookEndpoint, startGateway } from "../test/helpers/node/gateway.ts";
import {
	BENCH_LIMITS,
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

const args = benchArgs({
	counts: {
		duration: 5,
		rounds: 2,
		connections: 50,
		"body-bytes": 2048,
		sample: 200,
		"sample-rate": 50,
		"drain-timeout": 120,
	},
	flags: ["no-write"],
	texts: { configs: "assets,worker" },
});
const DURATION_S = args.count.duration;
const ROUNDS = args.count.rounds;
const CONNECTIONS = args.count.connections;
const BODY_BYTES = args.count["body-bytes"];
const SAMPLE = args.count.sample;
const SAMPLE_RATE = args.count["sample-rate"];
const DRAIN_TIMEOUT_S = args.count["drain-timeout"];
if (BODY_BYTES < 600) throw new Error("--body-bytes must be at least 600 (the payload's fixed part)");
const WARMUP_S = 2;
/** Deliveries sent (and counted) to warm the ingest path up before the measured runs. */
const WARMUP_DELIVERIES = Math.max(CONNECTIONS * 10, 500);
/** Distinct signed payloads; each request takes the next one, with a fresh delivery id. */
const POOL_SIZE = 1024;
/** How often the sample's D1 poll runs. */
const POLL_MS = 20;
/** D1 refuses a statement with more than 100 bound parameters. */
const MAX_IDS_PER_QUERY = 90;
const HANDLER = "webhook-delivery-status";

/** Written once, above the marked section, when the file has no such section yet. */
const INTRO = [
	"## Webhook deliveries (`npm run bench:webhooks`)",
	"",
	"`npm run bench:webhooks` (bench/webhooks.mjs; also run by `npm run bench` after the gateway benchmark)",
	"measures verified GitHub-style deliveries through the gateway: acknowledged deliveries/s against /healthz",
	"in the same run, time to acknowledge, time from acknowledgement to the handler's effect, and whether every",
	"acknowledged delivery is stored exactly once. The section between its markers is rewritten by each run.",
	"",
	"Targets (from the issue): acknowledged deliveries/s ≥ 35 % of /healthz in the same run, p99 time to",
	"acknowledge ≤ 50 ms; rows in D1 = 2xx acknowledgements.",
].join("\n");
/** Targets from the issue. */
const TARGET_RATIO = 0.35;
const TARGET_P99_MS = 50;

/** Wall-clock milliseconds with sub-millisecond resolution (the same clock as `Date.now()`). */
const wallMs = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------- payloads

const hex = (/** @type {number} */ bytes) =>
	randomUUID()
		.replace(/-/g, "")
		.repeat(2)
		.slice(0, bytes * 2);

/**
 * A GitHub `push` payload of about `bytes` bytes (compact JSON, as GitHub sends it): the usual
 * repository, pusher, sender and head-commit fields, padded with commits to the size.
 * @param {number} i @param {number} bytes
 */
function pushPayload(i, bytes) {
	const owner = { name: "acme", email: "ops@acme.example", login: "acme", id: 1000 + (i % 97), type: "Organization" };
	const commit = (/** @type {number} */ n) => ({
		id: hex(20),
		tree_id: hex(20),
		distinct: true,
		message: `Fix edge case ${i}.${n} in the ingest path`,
		timestamp: new Date(Date.UTC(2026, 10, 1, 12, 0, n % 60)).toISOString(),
		url: `https://github.com/acme/widgets/commit/${hex(20)}`,
		author: { name: "Dev Eloper", email: "dev@acme.example", username: "dev" },
		committer: { name: "GitHub", email: "noreply@github.com", username: "web-flow" },
		added: [],
		removed: [],
		modified: [`src/module-${n}.ts`],
	});
	const head = commit(0);
	const payload = {
		ref: "refs/heads/main",
		before: hex(20),
		after: head.id,
		repository: {
			id: 123456789,
			node_id: "R_kgDOHxyzAb",
			name: "widgets",
			full_name: "acme/widgets",
			private: true,
			owner,
			html_url: "https://github.com/acme/widgets",
			default_branch: "main",
			pushed_at: 1795312858 + i,
		},
		pusher: { name: "dev", email: "dev@acme.example" },
		sender: { login: "dev", id: 4242, type: "User", site_admin: false },
		created: false,
		deleted: false,
		forced: false,
		compare: `https://github.com/acme/widgets/compare/${hex(6)}...${hex(6)}`,
		commits: [head],
		head_commit: head,
		padding: "",
	};
	let n = 1;
	while (JSON.stringify(payload).length + 700 < bytes) payload.commits.push(commit(n++));
	const { padding: _, ...rest } = payload;
	let text = JSON.stringify(rest);
	// Top up to the exact size with a realistic-looking field.
	if (text.length < bytes) {
		const room = bytes - text.length - `,"description":""`.length;
		text = `${text.slice(0, -1)},"description":"${"Widget service".padEnd(Math.max(0, room), ".")}"}`;
	}
	return text;
}

/**
 * `POOL_SIZE` payloads, each signed as GitHub does (`sha256=` + hex HMAC-SHA256 of the raw body with the
 * endpoint's secret). The signature covers the body only, so a payload is valid with any delivery id.
 * @param {string} secret
 */
function signedPool(secret) {
	return Array.from({ length: POOL_SIZE }, (_, i) => {
		const body = Buffer.from(pushPayload(i, BODY_BYTES));
		return { body, signature: githubSignature(secret, body) };
	});
}

/** GitHub's other delivery headers (constant per hook). */
const GITHUB_HEADERS = {
	"content-type": "application/json",
	"user-agent": "GitHub-Hookshot/5f1c3a2",
	"x-github-event": "push",
	"x-github-hook-id": "512345678",
	"x-github-hook-installation-target-id": "123456789",
	"x-github-hook-installation-target-type": "repository",
};

// ---------------------------------------------------------------- load

/** @typedef {import("./lib.mjs").AutocannonRequest} AutocannonRequest */

/**
 * One autocannon run, with latency percentiles from every response's own time. The run's time is measured
 * from the start to the last response: autocannon's own `duration` only ends on its next 1 s tick, which
 * pads a run of a fixed number of requests by up to a second. CPU time of workerd (all its threads) and of
 * this Node process (the load generator and Miniflare's Node side) over the run.
 * @param {string} label
 * @param {{ url: string; duration?: number; amount?: number; requests?: AutocannonRequest[] }} options
 */
async function load(label, options) {
	const pids = workerdPids();
	const cpu0 = cpuNow({ workerd: pids });
	const { result, times, statuses, ok, started, last } = await runAutocannon({
		connections: CONNECTIONS,
		pipelining: 1,
		...options,
	});
	const seconds = (last - started) / 1000;
	const cpu1 = cpuNow({ workerd: pids });
	const wall = performance.now() - started;
	return {
		label,
		seconds,
		/** Wall-clock time of the last response. */
		endedAt: performance.timeOrigin + last,
		responses: times.length,
		ok,
		accepted: statuses[202] ?? 0,
		duplicates: statuses[200] ?? 0,
		non2xx: times.length - ok,
		errors: result.errors,
		timeouts: result.timeouts,
		statuses,
		rps: ok / seconds,
		/** workerd CPU ms per 2xx, and its CPU time ÷ wall time (1 = one core busy all the time). */
		workerdMs: (cpu1.workerd - cpu0.workerd) / ok,
		workerdBusy: (cpu1.workerd - cpu0.workerd) / wall,
		nodeMs: (cpu1.node - cpu0.node) / ok,
		p50: percentile(times, 50),
		p99: percentile(times, 99),
	};
}

/** The two configurations, as in bench/gateway.mjs. */
const ALL_CONFIGS = [
	{ key: "assets", title: "Worker behind its static-assets layer (as configured in wrangler.toml)", assets: true },
	{ key: "worker", title: "Worker alone (static-assets layer off)", assets: false },
];

/** Rows of an endpoint, by status. @param {import("../test/helpers/node/gateway.ts").D1Database} db @param {string} endpointId */
async function rowCounts(db, endpointId) {
	const { results } = await db
		.prepare("SELECT status, COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = ? GROUP BY status")
		.bind(endpointId)
		.all();
	/** @type {Record<string, number>} */
	const byStatus = {};
	let total = 0;
	for (const r of results) {
		byStatus[String(r.status)] = Number(r.n);
		total += Number(r.n);
	}
	return { total, byStatus, processed: byStatus.processed ?? 0 };
}

/** Measures one configuration. @param {(typeof ALL_CONFIGS)[number]} config */
async function measure(config) {
	const logs = workerLogTally();
	say(`bench [${config.key}]: starting the gateway under Miniflare (${config.title})…`);
	const gw = await startGateway({ assets: config.assets, onLog: logs.onLog });
	try {
		const db = await gw.db();
		await gw.seedTenant({ id: "bench", tier: "enterprise", limits: BENCH_LIMITS });
		const token = await gw.mintJwt({
			tenantId: "bench",
			scopes: ["webhooks:manage"],
			tier: "enterprise",
			expiresInS: 3600,
		});
		const secret = `bench-github-secret-${randomUUID()}`;
		const github = { source: /** @type {const} */ ("github"), secrets: [secret] };
		const loadEndpoint = await registerWebhookEndpoint(gw.url, token, { name: "bench-load", ...github });
		const sampleEndpoint = await registerWebhookEndpoint(gw.url, token, { name: "bench-sample", ...github });
		const pool = signedPool(secret);
		const poolBytes = pool.reduce((n, p) => n + p.body.byteLength, 0) / pool.length;

		const healthz = new URL("/healthz", gw.url);
		const ingest = new URL(loadEndpoint.ingestPath, gw.url);
		let next = 0;
		/** @type {AutocannonRequest[]} */
		const deliveryRequests = [
			{
				method: "POST",
				path: ingest.pathname,
				setupRequest: (/** @type {AutocannonRequest} */ req) => {
					const p = /** @type {(typeof pool)[number]} */ (pool[next++ % POOL_SIZE]);
					req.headers = {
						...GITHUB_HEADERS,
						"x-github-delivery": randomUUID(),
						"x-hub-signature-256": p.signature,
					};
					req.body = p.body;
					return req;
				},
			},
		];
		// Sanity: the gateway answers before any load.
		{
			const h = await fetch(healthz);
			if (h.status !== 200) throw new Error(`/healthz answered ${h.status}: ${await h.text()}`);
			await h.arrayBuffer();
		}

		/** When the last delivery of the load phase was answered (wall clock). */
		let lastDeliveryAck = 0;
		/** Every 2xx the client received for the load endpoint (warm-up included). */
		const acks = { ok: 0, accepted: 0, duplicates: 0, non2xx: 0, errors: 0, timeouts: 0 };
		/** @param {number} amount */
		const deliveries = async (/** @type {string} */ label, amount) => {
			// `amount`, not `duration`: every request sent gets its answer before the run ends (a timed
			// run would cut up to one request per connection off mid-flight, stored but never acknowledged).
			const r = await load(label, { url: ingest.origin, requests: deliveryRequests, amount });
			acks.ok += r.ok;
			acks.accepted += r.accepted;
			acks.duplicates += r.duplicates;
			acks.non2xx += r.non2xx;
			acks.errors += r.errors;
			acks.timeouts += r.timeouts;
			lastDeliveryAck = r.endedAt;
			return r;
		};
		const health = (/** @type {string} */ label, /** @type {number} */ seconds) =>
			load(label, { url: healthz.href, duration: seconds });

		say(`bench [${config.key}]: ${gw.url.href}; warm-up, then ${ROUNDS} × ABBA runs of ≈ ${DURATION_S} s…`);
		await health("warm-up /healthz", WARMUP_S);
		const warm = await deliveries("warm-up deliveries", WARMUP_DELIVERIES);
		// Size each delivery run to last about DURATION_S at the warm-up's rate (a multiple of the connections).
		const perRun = Math.max(CONNECTIONS * 10, Math.round((warm.rps * DURATION_S) / CONNECTIONS) * CONNECTIONS);

		/** @type {Awaited<ReturnType<typeof load>>[]} */
		const runs = [];
		for (let round = 0; round < ROUNDS; round++) {
			for (const kind of ["/healthz", "deliveries", "deliveries", "/healthz"]) {
				const r = kind === "/healthz" ? await health("/healthz", DURATION_S) : await deliveries("deliveries", perRun);
				say(
					`  ${r.label.padEnd(10)} ${r.rps.toFixed(0).padStart(6)} 2xx/s  p50 ${ms(r.p50)} ms  p99 ${ms(r.p99)} ms` +
						`  ${r.seconds.toFixed(2)} s  workerd ${ms(r.workerdMs, 3)} CPU ms/req (busy ${ms(r.workerdBusy)})` +
						`  node ${ms(r.nodeMs, 3)} CPU ms/req  statuses ${JSON.stringify(r.statuses)}  errors ${r.errors}  timeouts ${r.timeouts}`,
				);
				runs.push(r);
			}
		}
		const byLabel = (/** @type {string} */ label) => {
			const rs = runs.filter((r) => r.label === label);
			const sum = (/** @type {(r: (typeof rs)[number]) => number} */ f) => rs.reduce((n, r) => n + f(r), 0);
			return {
				rps: sum((r) => r.ok) / sum((r) => r.seconds),
				runs: rs.map((r) => Math.round(r.rps)),
				seconds: sum((r) => r.seconds),
				ok: sum((r) => r.ok),
				p50: sum((r) => r.p50) / rs.length,
				p99: sum((r) => r.p99) / rs.length,
				non2xx: sum((r) => r.non2xx),
				errors: sum((r) => r.errors + r.timeouts),
				workerdMs: sum((r) => r.workerdMs * r.ok) / sum((r) => r.ok),
				workerdBusy: sum((r) => r.workerdBusy) / rs.length,
				nodeMs: sum((r) => r.nodeMs * r.ok) / sum((r) => r.ok),
			};
		};
		const h = byLabel("/healthz");
		const d = byLabel("deliveries");

		// ---- every load-phase delivery processed (bounded wait)
		say(`bench [${config.key}]: waiting (≤ ${DRAIN_TIMEOUT_S} s) for every load-phase row to be processed…`);
		let loadRows = await rowCounts(db, loadEndpoint.id);
		const drainDeadline = Date.now() + DRAIN_TIMEOUT_S * 1000;
		while (loadRows.processed < loadRows.total && Date.now() < drainDeadline) {
			await sleep(250);
			loadRows = await rowCounts(db, loadEndpoint.id);
		}
		const lastUpdate = await db
			.prepare("SELECT MAX(updated_at) AS t FROM webhook_deliveries WHERE endpoint_id = ?")
			.bind(loadEndpoint.id)
			.first();
		const drainedAfterS = lastUpdate?.t == null ? Number.NaN : (Number(lastUpdate.t) - lastDeliveryAck) / 1000;

		// ---- time from acknowledgement to the handler's effect, on a drained system
		say(`bench [${config.key}]: ${SAMPLE} deliveries at ${SAMPLE_RATE}/s, polling D1 every ${POLL_MS} ms…`);
		const sample = await effectSample(gw, db, sampleEndpoint, pool);

		// ---- counts after the run
		const sampleRows = await rowCounts(db, sampleEndpoint.id);
		loadRows = await rowCounts(db, loadEndpoint.id);
		const effects = await db
			.prepare(
				`SELECT COUNT(*) AS n FROM processed_events p JOIN webhook_deliveries w ON p.event_id = 'ev_' || w.id
				 WHERE p.handler = ? AND w.endpoint_id IN (?, ?)`,
			)
			.bind(HANDLER, loadEndpoint.id, sampleEndpoint.id)
			.first();
		const failures = await db.prepare("SELECT COUNT(*) AS n FROM event_failures").first();
		const deadLetters = await db.prepare("SELECT COUNT(*) AS n FROM dead_letters").first();

		return {
			config,
			h,
			d,
			ratio: d.rps / h.rps,
			perRun,
			poolBytes,
			acks,
			loadRows,
			sampleRows,
			sample,
			effects: Number(effects?.n),
			failures: Number(failures?.n),
			deadLetters: Number(deadLetters?.n),
			drainedAfterS,
			workerLogs: logs.byLevel,
			notable: logs.notable,
		};
	} finally {
		await gw.dispose();
	}
}

/**
 * Sends `SAMPLE` deliveries to the sample endpoint at `SAMPLE_RATE`/s (each on its own, not waiting for the
 * previous one), records when each was acknowledged (client wall clock), and polls D1 for `processed`.
 * @param {import("../test/helpers/node/gateway.ts").Gateway} gw
 * @param {import("../test/helpers/node/gateway.ts").D1Database} db
 * @param {{ id: string; ingestPath: string }} endpoint
 * @param {{ body: Buffer; signature: string }[]} pool payloads signed before the run with the endpoint's secret
 */
async function effectSample(gw, db, endpoint, pool) {
	const url = new URL(endpoint.ingestPath, gw.url);
	/** @type {Map<string, { sent: number; ack: number; seen?: number }>} */
	const byRow = new Map();
	/** @type {number[]} */
	const ackMs = [];
	/** @type {Record<string, number>} */
	const statuses = {};
	let acked = 0;
	let failed = 0;
	const pending = new Set();
	let polling = true;
	let pollDeadline = Number.POSITIVE_INFINITY;
	const poller = (async () => {
		while (polling || [...byRow.values()].some((r) => r.seen === undefined)) {
			const waiting = [...byRow.entries()].filter(([, r]) => r.seen === undefined).map(([id]) => id);
			for (let i = 0; i < waiting.length; i += MAX_IDS_PER_QUERY) {
				const ids = waiting.slice(i, i + MAX_IDS_PER_QUERY);
				const { results } = await db
					.prepare(
						`SELECT id FROM webhook_deliveries WHERE status = 'processed' AND id IN (${ids.map(() => "?").join(",")})`,
					)
					.bind(...ids)
					.all();
				const now = wallMs();
				for (const r of results) {
					const row = byRow.get(String(r.id));
					if (row && row.seen === undefined) row.seen = now;
				}
			}
			if (!polling && Date.now() > pollDeadline) break;
			await sleep(POLL_MS);
		}
	})();
	const start = wallMs();
	for (let i = 0; i < SAMPLE; i++) {
		const due = start + (i * 1000) / SAMPLE_RATE;
		const wait = due - wallMs();
		if (wait > 0) await sleep(wait);
		const p = /** @type {(typeof pool)[number]} */ (pool[i % pool.length]);
		const sent = wallMs();
		const request = fetch(url, {
			method: "POST",
			headers: { ...GITHUB_HEADERS, "x-github-delivery": randomUUID(), "x-hub-signature-256": p.signature },
			body: p.body,
		})
			.then(async (res) => {
				const ack = wallMs();
				const text = await res.text();
				statuses[res.status] = (statuses[res.status] ?? 0) + 1;
				if (res.status >= 200 && res.status < 300) {
					acked++;
					ackMs.push(ack - sent);
					byRow.set(/** @type {{ id: string }} */ (JSON.parse(text)).id, { sent, ack });
				} else failed++;
			})
			.catch((/** @type {unknown} */ err) => {
				failed++;
				statuses[String(err)] = (statuses[String(err)] ?? 0) + 1;
			});
		pending.add(request);
		request.finally(() => pending.delete(request));
	}
	await Promise.all(pending);
	polling = false;
	pollDeadline = Date.now() + DRAIN_TIMEOUT_S * 1000;
	await poller;

	// The handler's own record of its effect: `updated_at` (workerd's Date.now() in the handler).
	const ids = [...byRow.keys()];
	/** @type {Map<string, { updated: number; created: number }>} */
	const stamps = new Map();
	for (let i = 0; i < ids.length; i += MAX_IDS_PER_QUERY) {
		const chunk = ids.slice(i, i + MAX_IDS_PER_QUERY);
		const { results } = await db
			.prepare(
				`SELECT id, updated_at, created_at FROM webhook_deliveries WHERE status = 'processed' AND id IN (${chunk.map(() => "?").join(",")})`,
			)
			.bind(...chunk)
			.all();
		for (const r of results) stamps.set(String(r.id), { updated: Number(r.updated_at), created: Number(r.created_at) });
	}
	/** @type {number[]} */
	const byHandler = [];
	/** @type {number[]} */
	const byPoll = [];
	/** @type {number[]} */
	const storedToEffect = [];
	for (const [id, r] of byRow) {
		const s = stamps.get(id);
		if (s) {
			byHandler.push(s.updated - r.ack);
			storedToEffect.push(s.updated - s.created);
		}
		if (r.seen !== undefined) byPoll.push(r.seen - r.ack);
	}
	const sorted = (/** @type {number[]} */ a) => [...a].sort((x, y) => x - y);
	const summary = (/** @type {number[]} */ a) => {
		const s = sorted(a);
		return { n: s.length, p50: median(s), p99: percentile(s, 99), max: s.at(-1) ?? Number.NaN };
	};
	return {
		sent: SAMPLE,
		acked,
		failed,
		statuses,
		ack: summary(ackMs),
		byHandler: summary(byHandler),
		byPoll: summary(byPoll),
		storedToEffect: summary(storedToEffect),
	};
}

async function main() {
	const started = Date.now();
	const loadBefore = loadAverage();
	const wanted = new Set(args.text.configs.split(",").map((k) => k.trim()));
	const configs = ALL_CONFIGS.filter((c) => wanted.has(c.key));
	if (configs.length === 0) throw new Error(`--configs: none of ${[...wanted].join(", ")} is assets or worker`);
	say("bench: building the Worker bundle if it is stale…");
	await buildWorker();
	const results = [];
	for (const config of configs) results.push(await measure(config));

	const totalS = (Date.now() - started) / 1000;
	const facts = machineFacts(loadBefore);
	const yes = (/** @type {boolean} */ ok) => (ok ? "yes" : "**NO**");

	const table = [
		"| configuration | route | 2xx/s (runs) | p50 ms | p99 ms | non-2xx | errors | workerd CPU ms per 2xx (busy) | Node CPU ms per 2xx |",
		"| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
		...results.flatMap((r) =>
			/** @type {const} */ ([
				["GET /healthz", r.h],
				["POST /webhooks/{id} (GitHub)", r.d],
			]).map(
				([route, x]) =>
					`| ${r.config.key} | ${route} | ${x.rps.toFixed(0)} (${x.runs.join(", ")}) | ${ms(x.p50)} | ${ms(x.p99)} | ${x.non2xx} | ${x.errors} | ${ms(x.workerdMs, 3)} (${ms(x.workerdBusy)}) | ${ms(x.nodeMs, 3)} |`,
			),
		),
	];
	const effectTable = [
		"| configuration | sample acked | ack p50 / p99 ms | ack → effect, handler's `updated_at`: p50 / p99 / max ms | ack → seen processed by the D1 poll: p50 / p99 ms | stored (`created_at`) → effect: p50 / p99 ms |",
		"| --- | ---: | ---: | ---: | ---: | ---: |",
		...results.map(
			(r) =>
				`| ${r.config.key} | ${r.sample.acked} / ${r.sample.sent} | ${ms(r.sample.ack.p50)} / ${ms(r.sample.ack.p99)} | ${ms(r.sample.byHandler.p50, 0)} / ${ms(r.sample.byHandler.p99, 0)} / ${ms(r.sample.byHandler.max, 0)} | ${ms(r.sample.byPoll.p50, 0)} / ${ms(r.sample.byPoll.p99, 0)} | ${ms(r.sample.storedToEffect.p50, 0)} / ${ms(r.sample.storedToEffect.p99, 0)} |`,
		),
	];
	const countTable = [
		"| configuration | endpoint | 2xx acks (202 / 200) | rows in D1 | equal | processed | effects recorded (`processed_events`) | non-2xx / conn. errors / timeouts |",
		"| --- | --- | ---: | ---: | :---: | ---: | ---: | ---: |",
		...results.flatMap((r) => [
			`| ${r.config.key} | load (warm-up + runs) | ${r.acks.ok} (${r.acks.accepted} / ${r.acks.duplicates}) | ${r.loadRows.total} | ${yes(r.acks.ok === r.loadRows.total)} | ${r.loadRows.processed} | — | ${r.acks.non2xx} / ${r.acks.errors} / ${r.acks.timeouts} |`,
			`| ${r.config.key} | sample | ${r.sample.acked} (${r.sample.statuses[202] ?? 0} / ${r.sample.statuses[200] ?? 0}) | ${r.sampleRows.total} | ${yes(r.sample.acked === r.sampleRows.total)} | ${r.sampleRows.processed} | ${r.effects} (both endpoints) | ${r.sample.failed} / — / — |`,
		]),
	];
	const summary = results.map((r) => {
		const equal = r.acks.ok === r.loadRows.total && r.sample.acked === r.sampleRows.total;
		const rows = r.loadRows.total + r.sampleRows.total;
		const processed = r.loadRows.processed + r.sampleRows.processed;
		return (
			`- **${r.config.key}** — ${r.config.title}: **${r.d.rps.toFixed(0)} acknowledged deliveries/s** against` +
			` ${r.h.rps.toFixed(0)} /healthz req/s = **${(r.ratio * 100).toFixed(1)} %** (target ≥ ${TARGET_RATIO * 100} %:` +
			` ${pass(r.ratio >= TARGET_RATIO)}); time to acknowledge p50 **${ms(r.d.p50)} ms**, p99 **${ms(r.d.p99)} ms**` +
			` (target ≤ ${TARGET_P99_MS} ms: ${pass(r.d.p99 <= TARGET_P99_MS)}; /healthz p99 in the same runs:` +
			` ${ms(r.h.p99)} ms); at ${SAMPLE_RATE} deliveries/s instead of ${CONNECTIONS} connections: p50 ${ms(r.sample.ack.p50)} ms,` +
			` p99 ${ms(r.sample.ack.p99)} ms. workerd CPU per acknowledged delivery ${ms(r.d.workerdMs, 2)} ms against` +
			` ${ms(r.h.workerdMs, 2)} ms per /healthz (${ms(r.d.workerdMs / r.h.workerdMs, 1)}×). Acknowledgement → handler's effect` +
			` (${r.sample.byHandler.n} deliveries at ${SAMPLE_RATE}/s): median **${ms(r.sample.byHandler.p50, 0)} ms**,` +
			` p99 **${ms(r.sample.byHandler.p99, 0)} ms**. Rows = 2xx acknowledgements: ${equal ? "**yes**" : "**NO**"}` +
			` (${rows} rows, ${r.acks.ok + r.sample.acked} acknowledgements, ${r.acks.duplicates} answered as duplicates);` +
			` processed: **${processed} / ${rows}** (the last load-phase row was processed ${ms(r.drainedAfterS, 1)} s after the` +
			` last delivery run ended); event failures ${r.failures}, dead letters ${r.deadLetters}. Worker log lines by level:` +
			` ${JSON.stringify(r.workerLogs)}.`
		);
	});
	const notable = results.flatMap((r) => r.notable.map((m) => `  - ${r.config.key}: \`${m.replace(/`/g, "'")}\``));
	const section = [
		`### Latest webhook run: ${facts.date}`,
		"",
		...summary,
		...(notable.length ? ["- Worker log lines other than info (first 5 per configuration):", ...notable] : []),
		"",
		`#### Under load (autocannon, ${CONNECTIONS} connections, pipelining 1, ${ROUNDS} × ABBA rounds)`,
		"",
		...table,
		"",
		`#### Acknowledgement to effect (${SAMPLE} deliveries at ${SAMPLE_RATE}/s after the load phase has drained)`,
		"",
		...effectTable,
		"",
		"#### Nothing lost, nothing doubled (counted after the run)",
		"",
		...countTable,
		"",
		"#### How these figures were taken",
		"",
		'- The Worker is the bundle `wrangler deploy --dry-run --env=""` builds (top-level environment of wrangler.toml,',
		"  minified as deployed), run by `new Miniflare(...)` (workerd) through test/helpers/node/gateway.ts with the local",
		"  D1, R2, the events queue and its consumer, driven through **Miniflare's own HTTP listener** on 127.0.0.1 (no",
		"  `wrangler dev` proxy). `assets`: `public/` served as configured, Miniflare's emulation of the assets router in",
		"  front of every request (as deployed). `worker`: that layer left out, requests reach the gateway directly.",
		"  One gateway per configuration; all of that configuration's figures come from that one run.",
		"- Set-up through the API: an enterprise tenant (limits far above the run) and two GitHub endpoints registered with",
		"  `POST /v1/webhooks/endpoints` under a JWT with scope `webhooks:manage` (one for the load, one for the sample).",
		`- Deliveries: \`POST /webhooks/{id}\` with GitHub's headers (\`x-github-event: push\`, hook ids, user agent), a fresh`,
		`  \`x-github-delivery\` (UUID) per request and one of ${POOL_SIZE} distinct compact-JSON push payloads of ${Math.round(results[0]?.poolBytes ?? BODY_BYTES)} bytes, each`,
		"  signed before the run (`x-hub-signature-256: sha256=<hex HMAC-SHA256 of the raw body>`; GitHub's signature does not",
		"  cover the delivery id, so the client does no HMAC during the run). Bodies stay under the 16 KiB inline threshold:",
		"  stored in the D1 row, not R2. Each acknowledged (202) delivery was verified, stored in D1 and enqueued.",
		`- Load: autocannon (programmatic) in the same Node process, ${CONNECTIONS} keep-alive connections, pipelining 1.`,
		`  Warm-up: /healthz ${WARMUP_S} s, then ${WARMUP_DELIVERIES} deliveries. Then ABBA order (/healthz, deliveries, deliveries,`,
		`  /healthz): /healthz runs last ${DURATION_S} s; delivery runs send a fixed number of requests (${results.map((r) => `${r.config.key} ${r.perRun}`).join(", ")},`,
		`  sized from the warm-up's rate to last ≈ ${DURATION_S} s) so that every request sent is answered before the run ends and`,
		"  can be counted (a timed run cuts off one in-flight request per connection). 2xx/s = 2xx responses ÷ run time over",
		"  all of a route's runs (each run in brackets); p50/p99 = mean over its runs of the percentile of every response's",
		"  own time (autocannon `response` events: request written → response complete, fractional ms). With a closed loop of",
		`  ${CONNECTIONS} connections, latency ≈ ${CONNECTIONS} ÷ throughput (Little's law): the p99 mostly says how far the route is`,
		"  from /healthz's rate, hence also the time to acknowledge at a modest open-loop rate (the sample below).",
		"- CPU: workerd's user + system time (all its threads, `/proc/<pid>/stat`, 10 ms ticks) and this Node process's",
		"  (`process.cpuUsage()`: autocannon plus Miniflare's Node side) over each run, ÷ its 2xx responses; busy = workerd CPU",
		"  time ÷ wall time. workerd runs the gateway, the local D1, queue broker and consumer, so a delivery's CPU includes",
		"  the consumer work that fell inside the run. CPU per request is steadier than req/s on this shared machine.",
		`- Acknowledgement → effect: after the load phase is processed, ${SAMPLE} deliveries to the sample endpoint, started`,
		`  every ${ms(1000 / SAMPLE_RATE, 0)} ms with Node's fetch without waiting for earlier answers. Ack time = when fetch() resolved (response`,
		"  headers in), on the client's wall clock (`performance.timeOrigin + performance.now()`, i.e. CLOCK_REALTIME). Effect",
		"  time = the row's `updated_at`, written by the `webhook-delivery-status` handler with workerd's `Date.now()` (same",
		"  host clock, whole ms, frozen at the handler's last I/O), so it slightly precedes the write's commit. Cross-check on",
		`  the client's clock only: the first D1 poll (every ${POLL_MS} ms, \`status = 'processed'\`) that saw the row. Stored →`,
		"  effect = `updated_at − created_at` (`created_at` is SQLite's `unixepoch('subsec')` at the insert).",
		"  The queue consumer takes batches of up to 50 messages or whatever arrived within `max_batch_timeout = 1` s",
		"  (wrangler.toml), so most of this time is the batch window, not work.",
		`- Counts: after the bounded wait (≤ ${DRAIN_TIMEOUT_S} s) for \`processed\`, rows in \`webhook_deliveries\` per endpoint against`,
		"  the 2xx answers the client received for it (200 = the gateway saw a repeated delivery id: none is sent here);",
		"  effects = `processed_events` rows of `webhook-delivery-status` for those deliveries (unique per event and handler).",
		`- Machine: nproc ${facts.nproc}; ${facts.cpu}; ${facts.memory}; ${facts.platform}; load ${facts.load}. Client, Miniflare`,
		"  (Node) and workerd share the machine; the Worker's log lines are read and counted by Miniflare in this process.",
		`- Node ${facts.node}; ${facts.versions}. Whole run: ${totalS.toFixed(0)} s.`,
	];

	say();
	say(`Webhook benchmark (${facts.date}; nproc ${facts.nproc}; Node ${facts.node}; Miniflare's own listener)`);
	say();
	for (const line of [...table, "", ...effectTable, "", ...countTable, "", ...summary, ...notable]) say(line);
	say();

	if (!args.flag["no-write"]) writeResults("bench/webhooks.mjs", section, INTRO);
	const failed = results.some(
		(r) => r.acks.ok !== r.loadRows.total || r.sample.acked !== r.sampleRows.total || r.acks.duplicates > 0,
	);
	if (failed) {
		say("bench: rows in D1 and 2xx acknowledgements differ (see the counts above)");
		process.exitCode = 1;
	}
}

await main();
