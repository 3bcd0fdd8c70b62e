// @ts-check
/**
 * `npm run bench:webhooks` (and the second half of `npm run bench`): what a verified webhook delivery
 * costs, end to end, against the storage floor under it. Runs the benchmarks' Worker (workers/bench.ts, built:
 * the gateway's handlers plus the floor route of bench/worker/floor.ts) under Miniflare's own HTTP listener
 * (no `wrangler dev` proxy), in two configurations (behind its static-assets layer, as deployed, and the Worker
 * alone), and in each, in ONE gateway run:
 *   1. seeds an enterprise tenant with limits far above the run and registers four GitHub endpoints through
 *      the API (`POST /v1/webhooks/endpoints`, a JWT with scope `webhooks:manage`, no admin): load and
 *      open-loop, for the gateway and for the floor (whose rows need an endpoint too);
 *   2. under load (autocannon, 50 connections), rounds of GET /healthz, of verified GitHub-style deliveries
 *      to the gateway (`POST /webhooks/{id}`) and of the same deliveries to the floor (`POST /__bench/floor`:
 *      read the body, verify the HMAC, one D1 insert, one queue send, 202), in the order /healthz, gateway,
 *      floor, floor, gateway, /healthz (every request a fresh `x-github-delivery` and one of a pool of ~2 KB
 *      push payloads signed before the run): acknowledged deliveries/s, p50/p99 time to acknowledge, the ratio
 *      gateway ÷ floor and the ratio to /healthz;
 *   3. waits (bounded) until every delivery of the load phase is `processed` (the floor's events go through
 *      the same consumer);
 *   4. an open-loop phase: deliveries sent on a fixed schedule (--sample-rate per second, each sent when due
 *      whether or not earlier ones were answered), in the order gateway, floor, floor, gateway: p50/p99 time
 *      to acknowledge and time from acknowledgement to the handler's effect, polled in D1 until `processed`;
 *   5. counts: rows in `webhook_deliveries` per endpoint against the 2xx acknowledgements the client
 *      received (equal: nothing lost, nothing doubled), and how many rows reached `processed`.
 * Writes the figures, and how they were taken, into its own marked section of bench/RESULTS.md.
 *
 * Options: --duration <s> (per autocannon run, default 5), --rounds <n> (rounds, default 2), --connections <n>
 * (default 50), --body-bytes <n> (payload size, default 2048), --sample <n> (deliveries per open-loop run,
 * default 200; four runs), --sample-rate <n> (their rate per second, default 50), --drain-timeout <s> (bounded
 * wait for `processed`, default 120), --configs assets,worker (default both), --no-write (print only).
 * Loads test/helpers/node/gateway.ts through Node's built-in TypeScript type stripping (Node ≥ 22.18).
 */
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { unstable_readConfig } from "wrangler";
import { buildWorker, ROOT, registerWebhookEndpoint, startGateway } from "../test/helpers/node/gateway.ts";
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
import { GITHUB_HEADERS, signedPushPool } from "./setup.mjs";

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
/** Deliveries sent (and counted) to warm each ingest path up before the measured runs. */
const WARMUP_DELIVERIES = Math.max(CONNECTIONS * 10, 500);
/** Distinct signed payloads; each request takes the next one, with a fresh delivery id. */
const POOL_SIZE = 1024;
/** How often the open-loop phase's D1 poll runs. */
const POLL_MS = 20;
/** D1 refuses a statement with more than 100 bound parameters. */
const MAX_IDS_PER_QUERY = 90;
const HANDLER = "webhook-delivery-status";
/** The events queue's consumer settings in force (wrangler.toml's top level, which Miniflare runs). */
const CONSUMER = (() => {
	const config = unstable_readConfig({ config: join(ROOT, "wrangler.toml") });
	const consumer = config.queues.consumers?.find((/** @type {{ queue: string }} */ c) => !c.queue.endsWith("-dlq"));
	return { maxBatchSize: consumer?.max_batch_size, maxBatchTimeout: consumer?.max_batch_timeout };
})();

/** Written once, above the marked section, when the file has no such section yet. */
const INTRO = [
	"## Webhook deliveries (`npm run bench:webhooks`)",
	"",
	"`npm run bench:webhooks` (bench/webhooks.mjs; also run by `npm run bench` after the gateway benchmark)",
	"measures verified GitHub-style deliveries through the gateway against the storage floor (a route of the",
	"benchmarks' Worker that only reads the body, verifies the HMAC, inserts the row into D1, sends the event and",
	"answers 202) and /healthz in the same run: acknowledged deliveries/s, time to acknowledge under load and at",
	"a fixed open-loop rate, time from acknowledgement to the handler's effect, and whether every acknowledged",
	"delivery is stored exactly once. The section between its markers is rewritten by each run.",
	"",
	"Targets (issue 11): acknowledged deliveries/s ≥ 90 % of the floor's in the same run; at 50 deliveries/s",
	"open-loop, p99 time to acknowledge ≤ 50 ms and acknowledgement → effect p50 ≤ 250 ms; rows in D1 = 2xx",
	"acknowledgements.",
].join("\n");
/** Targets. */
const TARGET_FLOOR_RATIO = 0.9;
const TARGET_OPEN_P99_MS = 50;
const TARGET_EFFECT_P50_MS = 250;

/** Wall-clock milliseconds with sub-millisecond resolution (the same clock as `Date.now()`). */
const wallMs = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------- payloads

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

/** The two ways a delivery is acknowledged. */
const TARGETS = /** @type {const} */ (["gateway", "floor"]);
/** @typedef {(typeof TARGETS)[number]} Target */
const ROUTE = { gateway: "POST /webhooks/{id} (GitHub)", floor: "POST /__bench/floor (storage floor)" };

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

/** Every 2xx (and everything else) the client received for one endpoint. */
const newAcks = () => ({ ok: 0, accepted: 0, duplicates: 0, non2xx: 0, errors: 0, timeouts: 0 });

/** Measures one configuration. @param {(typeof ALL_CONFIGS)[number]} config */
async function measure(config) {
	const logs = workerLogTally();
	say(`bench [${config.key}]: starting the benchmarks' Worker under Miniflare (${config.title})…`);
	const secret = `bench-github-secret-${randomUUID()}`;
	const gw = await startGateway({
		main: BENCH_MAIN,
		assets: config.assets,
		onLog: logs.onLog,
		bindings: { BENCH_FLOOR: "1", BENCH_FLOOR_SECRET: secret },
	});
	try {
		const db = await gw.db();
		await gw.seedTenant({ id: "bench", tier: "enterprise", limits: BENCH_LIMITS });
		const token = await gw.mintJwt({
			tenantId: "bench",
			scopes: ["webhooks:manage"],
			tier: "enterprise",
			expiresInS: 3600,
		});
		const github = { source: /** @type {const} */ ("github"), secrets: [secret] };
		/** @param {string} name */
		const endpoint = (name) => registerWebhookEndpoint(gw.url, token, { name, ...github });
		const endpoints = {
			gateway: { load: await endpoint("bench-load"), open: await endpoint("bench-open-loop") },
			floor: { load: await endpoint("bench-floor-load"), open: await endpoint("bench-floor-open-loop") },
		};
		/** Where a target takes deliveries for an endpoint: the gateway's ingest path, or the floor's route. */
		const pathOf = (/** @type {Target} */ target, /** @type {{ id: string; ingestPath: string }} */ e) =>
			target === "gateway" ? e.ingestPath : `/__bench/floor?tenant=bench&endpoint=${e.id}`;
		const pool = signedPushPool(secret, POOL_SIZE, BODY_BYTES);
		const poolBytes = pool.reduce((n, p) => n + p.body.byteLength, 0) / pool.length;

		const healthz = new URL("/healthz", gw.url);
		let next = 0;
		/** @param {string} path @returns {AutocannonRequest[]} */
		const deliveryRequests = (path) => [
			{
				method: "POST",
				path,
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
		// Sanity: /healthz and both routes answer before any load.
		{
			const h = await fetch(healthz);
			if (h.status !== 200) throw new Error(`/healthz answered ${h.status}: ${await h.text()}`);
			await h.arrayBuffer();
		}

		/** When the last load-phase delivery was answered (wall clock). */
		let lastDeliveryAck = 0;
		/** Every answer the client received for each target's load endpoint (warm-up included). */
		const acks = { gateway: newAcks(), floor: newAcks() };
		/** @param {Target} target @param {string} label @param {number} amount */
		const deliveries = async (target, label, amount) => {
			// `amount`, not `duration`: every request sent gets its answer before the run ends (a timed
			// run would cut up to one request per connection off mid-flight, stored but never acknowledged).
			const r = await load(label, {
				url: gw.url.origin,
				requests: deliveryRequests(pathOf(target, endpoints[target].load)),
				amount,
			});
			const a = acks[target];
			a.ok += r.ok;
			a.accepted += r.accepted;
			a.duplicates += r.duplicates;
			a.non2xx += r.non2xx;
			a.errors += r.errors;
			a.timeouts += r.timeouts;
			lastDeliveryAck = Math.max(lastDeliveryAck, r.endedAt);
			return r;
		};
		const health = (/** @type {string} */ label, /** @type {number} */ seconds) =>
			load(label, { url: healthz.href, duration: seconds });

		const order = /** @type {const} */ (["/healthz", "gateway", "floor", "floor", "gateway", "/healthz"]);
		say(
			`bench [${config.key}]: ${gw.url.href}; warm-up, then ${ROUNDS} rounds of ${order.join(", ")}, ≈ ${DURATION_S} s each…`,
		);
		await health("warm-up /healthz", WARMUP_S);
		/** Runs of a fixed number of deliveries, sized from each target's warm-up rate to last about DURATION_S. */
		const perRun = { gateway: 0, floor: 0 };
		for (const target of TARGETS) {
			const warm = await deliveries(target, `warm-up ${target}`, WARMUP_DELIVERIES);
			perRun[target] = Math.max(CONNECTIONS * 10, Math.round((warm.rps * DURATION_S) / CONNECTIONS) * CONNECTIONS);
		}

		/** @type {Awaited<ReturnType<typeof load>>[]} */
		const runs = [];
		for (let round = 0; round < ROUNDS; round++) {
			for (const kind of order) {
				const r =
					kind === "/healthz" ? await health("/healthz", DURATION_S) : await deliveries(kind, kind, perRun[kind]);
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
		const d = { gateway: byLabel("gateway"), floor: byLabel("floor") };

		// ---- every load-phase delivery processed (bounded wait)
		say(`bench [${config.key}]: waiting (≤ ${DRAIN_TIMEOUT_S} s) for every load-phase row to be processed…`);
		const loadCounts = async () => ({
			gateway: await rowCounts(db, endpoints.gateway.load.id),
			floor: await rowCounts(db, endpoints.floor.load.id),
		});
		let loadRows = await loadCounts();
		const drainDeadline = Date.now() + DRAIN_TIMEOUT_S * 1000;
		const drained = () => TARGETS.every((t) => loadRows[t].processed >= loadRows[t].total);
		while (!drained() && Date.now() < drainDeadline) {
			await sleep(250);
			loadRows = await loadCounts();
		}
		const lastUpdate = await db
			.prepare("SELECT MAX(updated_at) AS t FROM webhook_deliveries WHERE endpoint_id IN (?, ?)")
			.bind(endpoints.gateway.load.id, endpoints.floor.load.id)
			.first();
		const drainedAfterS = lastUpdate?.t == null ? Number.NaN : (Number(lastUpdate.t) - lastDeliveryAck) / 1000;

		// ---- open loop: a fixed send schedule, on a drained system
		say(
			`bench [${config.key}]: open loop, ${SAMPLE} deliveries at ${SAMPLE_RATE}/s per run (gateway, floor, floor, gateway)…`,
		);
		/** @type {Record<Target, OpenLoopRun[]>} */
		const open = { gateway: [], floor: [] };
		for (const target of /** @type {const} */ (["gateway", "floor", "floor", "gateway"])) {
			const r = await openLoop(db, new URL(pathOf(target, endpoints[target].open), gw.url), pool);
			say(
				`  open ${target.padEnd(8)} ${r.acked}/${r.sent} acked  ack p50 ${ms(median(r.ackMs))} ms  p99 ${ms(percentile(r.ackMs, 99))} ms` +
					`  ack → effect p50 ${ms(median(r.byHandler), 0)} ms  p99 ${ms(percentile(r.byHandler, 99), 0)} ms`,
			);
			open[target].push(r);
		}
		const openSummary = { gateway: summariseOpen(open.gateway), floor: summariseOpen(open.floor) };

		// ---- counts after the run
		loadRows = await loadCounts();
		const openRows = {
			gateway: await rowCounts(db, endpoints.gateway.open.id),
			floor: await rowCounts(db, endpoints.floor.open.id),
		};
		const allIds = [...TARGETS.flatMap((t) => [endpoints[t].load.id, endpoints[t].open.id])];
		const effects = await db
			.prepare(
				`SELECT COUNT(*) AS n FROM processed_events p JOIN webhook_deliveries w ON p.event_id = 'ev_' || w.id
				 WHERE p.handler = ? AND w.endpoint_id IN (${allIds.map(() => "?").join(", ")})`,
			)
			.bind(HANDLER, ...allIds)
			.first();
		const failures = await db.prepare("SELECT COUNT(*) AS n FROM event_failures").first();
		const deadLetters = await db.prepare("SELECT COUNT(*) AS n FROM dead_letters").first();

		return {
			config,
			h,
			d,
			ratio: d.gateway.rps / d.floor.rps,
			healthzRatio: { gateway: d.gateway.rps / h.rps, floor: d.floor.rps / h.rps },
			perRun,
			poolBytes,
			acks,
			loadRows,
			openRows,
			open: openSummary,
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
 * @typedef {{ sent: number; acked: number; failed: number; statuses: Record<string, number>; ackMs: number[];
 *   byHandler: number[]; byPoll: number[]; storedToEffect: number[] }} OpenLoopRun
 */

/**
 * Sends `SAMPLE` deliveries to `url` on a fixed schedule, `SAMPLE_RATE` per second (each when it is due, not
 * waiting for earlier answers), records when each was acknowledged (client wall clock), and polls D1 for
 * `processed`. Every list of times comes back sorted.
 * @param {import("../test/helpers/node/gateway.ts").D1Database} db
 * @param {URL} url
 * @param {{ body: Buffer; signature: string }[]} pool payloads signed before the run with the endpoint's secret
 * @returns {Promise<OpenLoopRun>}
 */
async function openLoop(db, url, pool) {
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
	const sorted = (/** @type {number[]} */ a) => a.sort((x, y) => x - y);
	return {
		sent: SAMPLE,
		acked,
		failed,
		statuses,
		ackMs: sorted(ackMs),
		byHandler: sorted(byHandler),
		byPoll: sorted(byPoll),
		storedToEffect: sorted(storedToEffect),
	};
}

/** A target's open-loop runs taken together. @param {OpenLoopRun[]} runs */
function summariseOpen(runs) {
	const all = (/** @type {(r: OpenLoopRun) => number[]} */ f) => runs.flatMap(f).sort((x, y) => x - y);
	const summary = (/** @type {number[]} */ s) => ({
		n: s.length,
		p50: median(s),
		p99: percentile(s, 99),
		max: s.at(-1) ?? Number.NaN,
	});
	/** @type {Record<string, number>} */
	const statuses = {};
	for (const r of runs) for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
	return {
		sent: runs.reduce((n, r) => n + r.sent, 0),
		acked: runs.reduce((n, r) => n + r.acked, 0),
		failed: runs.reduce((n, r) => n + r.failed, 0),
		statuses,
		ack: summary(all((r) => r.ackMs)),
		byHandler: summary(all((r) => r.byHandler)),
		byPoll: summary(all((r) => r.byPoll)),
		storedToEffect: summary(all((r) => r.storedToEffect)),
	};
}

async function main() {
	const started = Date.now();
	const loadBefore = loadAverage();
	const wanted = new Set(args.text.configs.split(",").map((k) => k.trim()));
	const configs = ALL_CONFIGS.filter((c) => wanted.has(c.key));
	if (configs.length === 0) throw new Error(`--configs: none of ${[...wanted].join(", ")} is assets or worker`);
	say("bench: building the benchmarks' Worker bundle if it is stale…");
	await buildWorker("auto", BENCH_MAIN);
	/** @type {Awaited<ReturnType<typeof measure>>[]} */
	const results = [];
	for (const config of configs) results.push(await measure(config));

	const totalS = (Date.now() - started) / 1000;
	const facts = machineFacts(loadBefore);
	const yes = (/** @type {boolean} */ ok) => (ok ? "yes" : "**NO**");
	const window = `\`max_batch_size = ${CONSUMER.maxBatchSize}\`, \`max_batch_timeout = ${CONSUMER.maxBatchTimeout}\``;

	const table = [
		"| configuration | route | 2xx/s (runs) | p50 ms | p99 ms | non-2xx | errors | workerd CPU ms per 2xx (busy) | Node CPU ms per 2xx |",
		"| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
		...results.flatMap((r) =>
			/** @type {const} */ ([
				["GET /healthz", r.h],
				[ROUTE.gateway, r.d.gateway],
				[ROUTE.floor, r.d.floor],
			]).map(
				([route, x]) =>
					`| ${r.config.key} | ${route} | ${x.rps.toFixed(0)} (${x.runs.join(", ")}) | ${ms(x.p50)} | ${ms(x.p99)} | ${x.non2xx} | ${x.errors} | ${ms(x.workerdMs, 3)} (${ms(x.workerdBusy)}) | ${ms(x.nodeMs, 3)} |`,
			),
		),
	];
	const openTable = [
		"| configuration | route | acked | ack p50 / p99 / max ms | ack → effect, handler's `updated_at`: p50 / p99 / max ms | ack → seen processed by the D1 poll: p50 / p99 ms | stored (`created_at`) → effect: p50 / p99 ms |",
		"| --- | --- | ---: | ---: | ---: | ---: | ---: |",
		...results.flatMap((r) =>
			TARGETS.map((t) => {
				const o = r.open[t];
				return `| ${r.config.key} | ${ROUTE[t]} | ${o.acked} / ${o.sent} | ${ms(o.ack.p50)} / ${ms(o.ack.p99)} / ${ms(o.ack.max)} | ${ms(o.byHandler.p50, 0)} / ${ms(o.byHandler.p99, 0)} / ${ms(o.byHandler.max, 0)} | ${ms(o.byPoll.p50, 0)} / ${ms(o.byPoll.p99, 0)} | ${ms(o.storedToEffect.p50, 0)} / ${ms(o.storedToEffect.p99, 0)} |`;
			}),
		),
	];
	const countTable = [
		"| configuration | route | endpoint | 2xx acks (202 / 200) | rows in D1 | equal | processed | non-2xx / conn. errors / timeouts |",
		"| --- | --- | --- | ---: | ---: | :---: | ---: | ---: |",
		...results.flatMap((r) =>
			TARGETS.flatMap((t) => [
				`| ${r.config.key} | ${t} | load (warm-up + runs) | ${r.acks[t].ok} (${r.acks[t].accepted} / ${r.acks[t].duplicates}) | ${r.loadRows[t].total} | ${yes(r.acks[t].ok === r.loadRows[t].total)} | ${r.loadRows[t].processed} | ${r.acks[t].non2xx} / ${r.acks[t].errors} / ${r.acks[t].timeouts} |`,
				`| ${r.config.key} | ${t} | open loop | ${r.open[t].acked} (${r.open[t].statuses[202] ?? 0} / ${r.open[t].statuses[200] ?? 0}) | ${r.openRows[t].total} | ${yes(r.open[t].acked === r.openRows[t].total)} | ${r.openRows[t].processed} | ${r.open[t].failed} / — / — |`,
			]),
		),
	];
	const equalOf = (/** @type {Awaited<ReturnType<typeof measure>>} */ r) =>
		TARGETS.every((t) => r.acks[t].ok === r.loadRows[t].total && r.open[t].acked === r.openRows[t].total);
	const summary = results.map((r) => {
		const rows = TARGETS.reduce((n, t) => n + r.loadRows[t].total + r.openRows[t].total, 0);
		const processed = TARGETS.reduce((n, t) => n + r.loadRows[t].processed + r.openRows[t].processed, 0);
		const acked = TARGETS.reduce((n, t) => n + r.acks[t].ok + r.open[t].acked, 0);
		const duplicates = TARGETS.reduce((n, t) => n + r.acks[t].duplicates, 0);
		const g = r.d.gateway;
		const f = r.d.floor;
		const og = r.open.gateway;
		const of = r.open.floor;
		return (
			`- **${r.config.key}** — ${r.config.title}: **${g.rps.toFixed(0)} acknowledged deliveries/s** through the gateway against` +
			` **${f.rps.toFixed(0)}/s** through the storage floor = **${(r.ratio * 100).toFixed(1)} %** (target ≥ ${TARGET_FLOOR_RATIO * 100} %:` +
			` ${pass(r.ratio >= TARGET_FLOOR_RATIO)}); /healthz ${r.h.rps.toFixed(0)} req/s in the same runs (gateway ${(r.healthzRatio.gateway * 100).toFixed(1)} %,` +
			` floor ${(r.healthzRatio.floor * 100).toFixed(1)} % of it). Under load (${CONNECTIONS} connections) time to acknowledge p50 / p99:` +
			` gateway ${ms(g.p50)} / ${ms(g.p99)} ms, floor ${ms(f.p50)} / ${ms(f.p99)} ms. Open loop at ${SAMPLE_RATE} deliveries/s:` +
			` gateway p99 **${ms(og.ack.p99)} ms** (target ≤ ${TARGET_OPEN_P99_MS} ms: ${pass(og.ack.p99 <= TARGET_OPEN_P99_MS)}; p50 ${ms(og.ack.p50)} ms),` +
			` floor p99 ${ms(of.ack.p99)} ms; acknowledgement → handler's effect p50 **${ms(og.byHandler.p50, 0)} ms**` +
			` (target ≤ ${TARGET_EFFECT_P50_MS} ms: ${pass(og.byHandler.p50 <= TARGET_EFFECT_P50_MS)}; p99 ${ms(og.byHandler.p99, 0)} ms;` +
			` floor's deliveries ${ms(of.byHandler.p50, 0)} / ${ms(of.byHandler.p99, 0)} ms) with ${window}. workerd CPU per` +
			` acknowledged delivery ${ms(g.workerdMs, 2)} ms (gateway) against ${ms(f.workerdMs, 2)} ms (floor) and ${ms(r.h.workerdMs, 2)} ms per` +
			` /healthz. Rows = 2xx acknowledgements: ${equalOf(r) ? "**yes**" : "**NO**"} (${rows} rows, ${acked} acknowledgements,` +
			` ${duplicates} answered as duplicates); processed: **${processed} / ${rows}** (the last load-phase row was processed` +
			` ${ms(r.drainedAfterS, 1)} s after the last delivery run ended); event failures ${r.failures}, dead letters ${r.deadLetters}.` +
			` Worker log lines by level: ${JSON.stringify(r.workerLogs)}.`
		);
	});
	const notable = results.flatMap((r) => r.notable.map((m) => `  - ${r.config.key}: \`${m.replace(/`/g, "'")}\``));
	const section = [
		`### Latest webhook run: ${facts.date}`,
		"",
		...summary,
		...(notable.length ? ["- Worker log lines other than info (first 5 per configuration):", ...notable] : []),
		"",
		`#### Under load (autocannon, ${CONNECTIONS} connections, pipelining 1, ${ROUNDS} rounds of /healthz, gateway, floor, floor, gateway, /healthz)`,
		"",
		...table,
		"",
		`#### Open loop (${SAMPLE_RATE} deliveries/s on a fixed schedule, ${SAMPLE} per run, runs gateway, floor, floor, gateway, after the load phase has drained)`,
		"",
		...openTable,
		"",
		"#### Nothing lost, nothing doubled (counted after the run)",
		"",
		...countTable,
		"",
		"#### How these figures were taken",
		"",
		'- The Worker is the benchmarks\' entry (workers/bench.ts) bundled as `wrangler deploy workers/bench.ts --dry-run --env=""`',
		"  builds it (top-level environment of wrangler.toml, minified as deployed): the gateway's own handlers plus the",
		"  storage floor route of bench/worker/floor.ts, switched on by the `BENCH_FLOOR` binding (never set by wrangler.toml;",
		"  the deployed bundle holds none of it). It runs under `new Miniflare(...)` (workerd) through",
		"  test/helpers/node/gateway.ts with the local D1, R2, the events queue and its consumer, driven through",
		"  **Miniflare's own HTTP listener** on 127.0.0.1 (no `wrangler dev` proxy). `assets`: `public/` served as configured,",
		"  Miniflare's emulation of the assets router in front of every request (as deployed). `worker`: that layer left",
		"  out. One Worker per configuration; all of that configuration's figures come from that one run.",
		"- The storage floor (`POST /__bench/floor?tenant=…&endpoint=…`) does only what an acknowledged delivery must do on",
		"  the platform: read the body; verify `x-hub-signature-256` through WebCrypto as the gateway's GitHub verification",
		"  does (key imported, HMAC-SHA256 of the raw body, constant-time compare); one D1 insert of the same",
		"  `webhook_deliveries` row (body inline as base64, unique on endpoint + delivery id, so the same index writes);",
		"  one queue send of the same `webhook.received` event; 202. No middleware, validation, admission or logging.",
		"  Its events go through the same consumer as the gateway's, so both routes leave the consumer the same work.",
		"- Set-up through the API: an enterprise tenant (limits far above the run) and four GitHub endpoints registered with",
		"  `POST /v1/webhooks/endpoints` under a JWT with scope `webhooks:manage` (load and open loop, gateway and floor).",
		`- Deliveries: GitHub's headers (\`x-github-event: push\`, hook ids, user agent), a fresh \`x-github-delivery\` (UUID) per`,
		`  request and one of ${POOL_SIZE} distinct compact-JSON push payloads of ${Math.round(results[0]?.poolBytes ?? BODY_BYTES)} bytes, each signed before the run`,
		"  (`x-hub-signature-256: sha256=<hex HMAC-SHA256 of the raw body>`; GitHub's signature does not cover the delivery",
		"  id, so the client does no HMAC during the run). Bodies stay under the 16 KiB inline threshold: stored in the D1",
		"  row, not R2. Each acknowledged (202) delivery was verified, stored in D1 and enqueued.",
		`- Load: autocannon (programmatic) in the same Node process, ${CONNECTIONS} keep-alive connections, pipelining 1.`,
		`  Warm-up: /healthz ${WARMUP_S} s, then ${WARMUP_DELIVERIES} deliveries to each route. Then ${ROUNDS} rounds in the order /healthz, gateway,`,
		`  floor, floor, gateway, /healthz: /healthz runs last ${DURATION_S} s; delivery runs send a fixed number of requests`,
		`  (${results.map((r) => `${r.config.key}: gateway ${r.perRun.gateway}, floor ${r.perRun.floor}`).join("; ")}, sized from each route's warm-up`,
		`  rate to last ≈ ${DURATION_S} s) so that every request sent is answered before the run ends and can be counted. 2xx/s =`,
		"  2xx responses ÷ run time over all of a route's runs (each run in brackets); p50/p99 = mean over its runs of the",
		"  percentile of every response's own time (autocannon `response` events: request written → response complete,",
		`  fractional ms). With a closed loop of ${CONNECTIONS} connections, latency ≈ ${CONNECTIONS} ÷ throughput (Little's law), so the`,
		"  time-to-acknowledge target is taken in the open loop.",
		"- CPU: workerd's user + system time (all its threads, `/proc/<pid>/stat`, 10 ms ticks) and this Node process's",
		"  (`process.cpuUsage()`: autocannon plus Miniflare's Node side) over each run, ÷ its 2xx responses; busy = workerd CPU",
		"  time ÷ wall time. workerd runs the Worker, the local D1, queue broker and consumer, so a delivery's CPU includes",
		"  the consumer work that fell inside the run. CPU per request is steadier than req/s on this shared machine.",
		`- Open loop: after the load phase is processed, runs of ${SAMPLE} deliveries, each sent when due (every`,
		`  ${ms(1000 / SAMPLE_RATE, 0)} ms) with Node's fetch without waiting for earlier answers, in the order gateway, floor, floor,`,
		"  gateway, each to its own endpoint. Ack time = when fetch() resolved (response headers in), on the client's wall",
		"  clock (`performance.timeOrigin + performance.now()`, i.e. CLOCK_REALTIME). Effect time = the row's `updated_at`,",
		"  written by the `webhook-delivery-status` handler with workerd's `Date.now()` (same host clock, whole ms, frozen at",
		"  the handler's last I/O), so it slightly precedes the write's commit. Cross-check on the client's clock only: the",
		`  first D1 poll (every ${POLL_MS} ms, \`status = 'processed'\`) that saw the row. Stored → effect = \`updated_at − created_at\``,
		"  (`created_at` is SQLite's `unixepoch('subsec')` at the insert). The queue consumer's batch window in force:",
		`  ${window} (wrangler.toml, seconds; Miniflare flushes a batch when it is full or that long after its first message).`,
		`- Counts: after the bounded wait (≤ ${DRAIN_TIMEOUT_S} s) for \`processed\`, rows in \`webhook_deliveries\` per endpoint against`,
		"  the 2xx answers the client received for it (200 = a repeated delivery id: none is sent here); effects recorded",
		`  in \`processed_events\` by \`${HANDLER}\` for the four endpoints: ${results.map((r) => `${r.config.key} ${r.effects}`).join(", ")}.`,
		`- Machine: nproc ${facts.nproc}; ${facts.cpu}; ${facts.memory}; ${facts.platform}; load ${facts.load}. Client, Miniflare`,
		"  (Node) and workerd share the machine; the Worker's log lines are read and counted by Miniflare in this process.",
		`- Node ${facts.node}; ${facts.versions}. Whole run: ${totalS.toFixed(0)} s.`,
	];

	say();
	say(`Webhook benchmark (${facts.date}; nproc ${facts.nproc}; Node ${facts.node}; Miniflare's own listener)`);
	say();
	for (const line of [...table, "", ...openTable, "", ...countTable, "", ...summary, ...notable]) say(line);
	say();

	if (!args.flag["no-write"]) writeResults("bench/webhooks.mjs", section, INTRO);
	const failed = results.some((r) => !equalOf(r) || TARGETS.some((t) => r.acks[t].duplicates > 0));
	if (failed) {
		say("bench: rows in D1 and 2xx acknowledgements differ (see the counts above)");
		process.exitCode = 1;
	}
}

await main();
