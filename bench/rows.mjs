// @ts-check
/**
 * `npm run bench:rows`: rows written per request — D1's `meta.rows_written` and the Durable Objects' SQL cursors'
 * `rowsWritten`, the two figures the platform bills — on four paths: a webhook acknowledgement
 * (`POST /webhooks/{id}`), its processing (the events consumer for that delivery), a chat completion
 * (`POST /v1/chat/completions` against the stub provider, usage recorded), and an API request (`GET /v1/me`, with
 * a JWT and with an API key). Runs the benchmarks' entry (workers/bench.ts, built) under Miniflare's own HTTP
 * listener with `BENCH_ROWS=1`: each entry point's `DB` then counts its statements' rows (bench/worker/rows.ts) and
 * `GET /__bench/rows` answers the counts with the objects' `rowsWritten()`. Each path: one warm-up request, then
 * --requests sequential ones, then a bounded wait until the queue work they caused is done; the figures are the
 * counters' growth divided by the requests. Writes its own marked section of bench/RESULTS.md (`--label` names the
 * column, e.g. before/after).
 *
 * Options: --requests <n> (per path, default 100), --label <text> (default "now"), --no-write (print only).
 */
import { randomUUID } from "node:crypto";
import { buildWorker, githubSignature, registerWebhookEndpoint, startGateway } from "../test/helpers/node/gateway.ts";
import { GATEWAY_OPENAI_KEY, llmConfigFor } from "../test/helpers/node/llm.ts";
import { startLlmStub } from "../test/helpers/node/llm-stub.ts";
import { BENCH_LIMITS, BENCH_MAIN, benchArgs, loadAverage, machineFacts, say, sleep, writeResults } from "./lib.mjs";

const args = benchArgs({ counts: { requests: 100 }, flags: ["no-write"], texts: { label: "now" } });
const N = args.count.requests;
const SETTLE_TIMEOUT_MS = 60_000;

/** @typedef {{ d1: Record<string, number>; limiters: Record<string, number>; breakers: Record<string, number> }} Counts */

/** @param {URL} base @param {{ limiters?: string[]; breakers?: string[] }} names @returns {Promise<Counts>} */
async function counts(base, names) {
	const url = new URL("/__bench/rows", base);
	for (const n of names.limiters ?? []) url.searchParams.append("limiter", n);
	for (const n of names.breakers ?? []) url.searchParams.append("breaker", n);
	const res = await fetch(url);
	if (res.status !== 200) throw new Error(`/__bench/rows answered ${res.status}: is BENCH_ROWS set?`);
	return /** @type {Counts} */ (await res.json());
}

/** Growth of every counter from `a` to `b`; an object that restarted (its count fell) invalidates the run. */
function growth(/** @type {Counts} */ a, /** @type {Counts} */ b) {
	const d = (/** @type {Record<string, number>} */ x, /** @type {Record<string, number>} */ y) => {
		/** @type {Record<string, number>} */
		const out = {};
		for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) {
			out[k] = (y[k] ?? 0) - (x[k] ?? 0);
			if (out[k] < 0) throw new Error(`INVALID RUN: counter ${k} went backwards (the object restarted)`);
		}
		return out;
	};
	return { d1: d(a.d1, b.d1), limiters: d(a.limiters, b.limiters), breakers: d(a.breakers, b.breakers) };
}

/** Waits (bounded) until `done()` holds and the counters stop moving for a second. */
async function settle(/** @type {() => Promise<boolean>} */ done, /** @type {() => Promise<Counts>} */ read) {
	const until = Date.now() + SETTLE_TIMEOUT_MS;
	while (!(await done())) {
		if (Date.now() > until) throw new Error("INVALID RUN: the queue work did not finish in time");
		await sleep(100);
	}
	let last = JSON.stringify(await read());
	for (;;) {
		await sleep(1000);
		const now = JSON.stringify(await read());
		if (now === last) return JSON.parse(now);
		if (Date.now() > until) throw new Error("INVALID RUN: the counters kept moving");
		last = now;
	}
}

/** @param {Response} res @param {number} status */
async function expectStatus(res, status, /** @type {string} */ what) {
	const text = await res.text();
	if (res.status !== status) throw new Error(`${what}: HTTP ${res.status} ${text.slice(0, 300)}`);
	return text;
}

async function measure() {
	const stub = await startLlmStub({ record: false });
	try {
		const gw = await startGateway({
			main: BENCH_MAIN,
			assets: false,
			bindings: {
				BENCH_ROWS: "1",
				LLM_CONFIG: JSON.stringify(llmConfigFor(stub, { routing: {} })),
				OPENAI_API_KEY: GATEWAY_OPENAI_KEY,
			},
		});
		try {
			return await paths(gw);
		} finally {
			await gw.dispose();
		}
	} finally {
		await stub.close();
	}
}

/** @param {import("../test/helpers/node/gateway.ts").Gateway} gw */
async function paths(gw) {
	const db = await gw.db();
	const base = gw.url;
	await gw.seedTenant({
		id: "bench",
		tier: "enterprise",
		limits: { ...BENCH_LIMITS, llmBudget: { monthlyTokens: 1_000_000_000_000 } },
	});
	const operatorTenant = String(gw.vars.OPERATOR_TENANT);
	await gw.seedTenant({ id: operatorTenant, tier: "enterprise" });
	const operator = await gw.mintJwt({ tenantId: operatorTenant, scopes: ["admin"], sub: "ops" });
	const token = await gw.mintJwt({
		tenantId: "bench",
		scopes: ["webhooks:manage", "llm", "api:read"],
		tier: "enterprise",
		sub: "bench-user",
		expiresInS: 3600,
	});
	const created = await fetch(new URL("/v1/admin/tenants/bench/keys", base), {
		method: "POST",
		headers: { authorization: `Bearer ${operator}`, "content-type": "application/json" },
		body: JSON.stringify({ name: "bench", scopes: ["api:read"] }),
	});
	const key = /** @type {{ id: string; key: string }} */ (JSON.parse(await expectStatus(created, 201, "create key")));
	const secret = `bench-github-secret-${randomUUID()}`;
	const endpoint = await registerWebhookEndpoint(base, token, {
		name: "bench-rows",
		source: "github",
		secrets: [secret],
	});
	// The tenant bucket, the key's, and the endpoint's own ingest bucket.
	const limiters = ["tenant:bench", `key:${key.id}`, `webhook-endpoint:${endpoint.id}`];
	const breakers = ["gateway:llm:openai", "tenant:bench:llm:openai/ok"];
	const read = () => counts(base, { limiters, breakers });
	/** @type {Record<string, ReturnType<typeof growth>>} */
	const results = {};

	// ---- webhooks: N deliveries acknowledged (fetch), then processed (queue)
	const body = JSON.stringify({ ref: "refs/heads/main", commits: [{ id: "abc", message: "bench" }] });
	const deliver = async () => {
		const res = await fetch(new URL(endpoint.ingestPath, base), {
			method: "POST",
			headers: {
				"content-type": "application/json",
				"x-github-event": "push",
				"x-github-delivery": randomUUID(),
				"x-hub-signature-256": githubSignature(secret, body),
			},
			body,
		});
		await expectStatus(res, 202, "webhook");
	};
	const allProcessed = async () => {
		const row = await db
			.prepare("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = ? AND status != 'processed'")
			.bind(endpoint.id)
			.first();
		return Number(row?.n) === 0;
	};
	await deliver();
	let before = await settle(allProcessed, read);
	for (let i = 0; i < N; i++) await deliver();
	results.webhook = growth(before, await settle(allProcessed, read));

	// ---- chat completions: answered (fetch: admission, budget, breakers, cache), usage recorded (queue)
	let n = 0;
	const chat = async () => {
		const res = await fetch(new URL("/v1/chat/completions", base), {
			method: "POST",
			headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
			body: JSON.stringify({
				model: "openai/ok",
				messages: [{ role: "user", content: `bench ${randomUUID()} ${n++}` }],
			}),
		});
		await expectStatus(res, 200, "chat");
	};
	const usageRows = async () => Number((await db.prepare("SELECT COUNT(*) AS n FROM llm_usage").first())?.n);
	await chat();
	before = await settle(async () => (await usageRows()) === 1, read);
	for (let i = 0; i < N; i++) await chat();
	results.chat = growth(before, await settle(async () => (await usageRows()) === N + 1, read));

	// ---- API requests: GET /v1/me with a JWT, then with an API key
	for (const [name, headers] of /** @type {const} */ ([
		["jwt", { authorization: `Bearer ${token}` }],
		["key", { "x-api-key": key.key }],
	])) {
		const me = async () => expectStatus(await fetch(new URL("/v1/me", base), { headers }), 200, `/v1/me (${name})`);
		await me();
		before = await settle(async () => true, read);
		for (let i = 0; i < N; i++) await me();
		results[name] = growth(before, await settle(async () => true, read));
	}
	return results;
}

const per = (/** @type {number} */ total) => (total / N).toFixed(2);
const sum = (/** @type {Record<string, number>} */ o) => Object.values(o).reduce((a, b) => a + b, 0);

async function main() {
	const loadBefore = loadAverage();
	say("bench: building the Worker…");
	await buildWorker("auto", BENCH_MAIN);
	say(`bench: ${N} requests per path…`);
	const r = await measure();
	const facts = machineFacts(loadBefore);
	const webhook = /** @type {ReturnType<typeof growth>} */ (r.webhook);
	const chat = /** @type {ReturnType<typeof growth>} */ (r.chat);
	const jwt = /** @type {ReturnType<typeof growth>} */ (r.jwt);
	const key = /** @type {ReturnType<typeof growth>} */ (r.key);
	const rows = [
		["webhook ack (`POST /webhooks/{id}`)", webhook.d1.fetch ?? 0, sum(webhook.limiters) + sum(webhook.breakers)],
		["webhook processing (events consumer)", webhook.d1.queue ?? 0, 0],
		["chat completion: request", chat.d1.fetch ?? 0, sum(chat.limiters) + sum(chat.breakers)],
		["chat completion: usage recorded (consumer)", chat.d1.queue ?? 0, 0],
		["API request, JWT (`GET /v1/me`)", jwt.d1.fetch ?? 0, sum(jwt.limiters) + sum(jwt.breakers)],
		["API request, API key (`GET /v1/me`)", key.d1.fetch ?? 0, sum(key.limiters) + sum(key.breakers)],
	];
	const lines = [
		`### Rows written per request (${args.text.label}) — ${facts.date}`,
		"",
		"| path | D1 rows / request | Durable Object rows / request |",
		"| --- | ---: | ---: |",
		...rows.map(([label, d1, dos]) => `| ${label} | ${per(Number(d1))} | ${per(Number(dos))} |`),
		"",
		`Per path: one warm-up request, then ${N} sequential requests; figures are the counters' growth over those ${N}`,
		"requests (and the queue work they caused, waited for) divided by N. Durable Object rows, per object:",
		`webhook ${JSON.stringify(webhook.limiters)}; chat ${JSON.stringify({ ...chat.limiters, ...chat.breakers })};`,
		`JWT ${JSON.stringify(jwt.limiters)}; key ${JSON.stringify(key.limiters)}.`,
		`Machine: ${facts.cpu}, nproc ${facts.nproc}, ${facts.memory}; load ${facts.load}; Node ${facts.node}; ${facts.versions}.`,
	];
	for (const line of lines) say(line);
	if (!args.flag["no-write"]) writeResults(`bench/rows.mjs#${args.text.label}`, lines);
}

await main();
