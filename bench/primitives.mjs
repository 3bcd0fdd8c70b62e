// @ts-check
/**
 * `npm run bench:primitives`: what one platform operation costs under Miniflare on this machine, measured in
 * a Worker that does nothing else. It is the floor under bench/llm.mjs's figures: workerd runs the Worker, the
 * Cache API, Durable Objects, Queues and D1 on one thread here, so each operation a request makes is paid on the
 * same thread that serves the requests, and what a route may do per request to stay within a ratio of the bare
 * pass-through can be read off this table.
 *
 * Routes of one Worker (below), each loaded alone with autocannon (--connections, default 20), rounds in ABBA
 * order; per route: requests/s and workerd CPU per request (from /proc), and the CPU added over `nothing`.
 * The `floor` routes make only the storage operations the LLM plane's issue asks of every request (a cache
 * lookup that misses and the write that follows it; a budget reserve and settle), around the same subrequest
 * as `fetch`, and nothing else: no parsing, no auth, no routing.
 *
 * Then, with one request in flight: --samples requests per route (after 100 unmeasured ones), the routes
 * in a fresh random order each pass, each timed from sending to the last body byte (process.hrtime): the median and what it adds over
 * `nothing`.
 *
 * Options: --duration <s> (per run, default 3), --rounds <n> (default 2), --connections <n> (default 20),
 * --samples <n> (default 400), --no-write (print only).
 */
import { spawn } from "node:child_process";
import { convertV4MiniflareOptions, Log, LogLevel, Miniflare } from "miniflare";
import { mulberry32 } from "../test/helpers/random.ts";
import {
	benchArgs,
	cpuNow,
	loadAverage,
	machineFacts,
	median,
	ms,
	runAutocannon,
	say,
	sleep,
	workerdPids,
	writeResults,
} from "./lib.mjs";

const args = benchArgs({ counts: { duration: 3, rounds: 2, connections: 20, samples: 400 }, flags: ["no-write"] });
const DURATION_S = args.count.duration;
const ROUNDS = args.count.rounds;
const CONNECTIONS = args.count.connections;
const SAMPLES = args.count.samples;
const WARMUP_S = 1;
/** Written once, above the marked section, when the file has no such section yet. */
const INTRO = [
	"## Platform primitives under Miniflare (`npm run bench:primitives`)",
	"",
	"`npm run bench:primitives` (bench/primitives.mjs) measures what one operation costs in a Worker that does",
	"nothing else, on this machine: the floor under the LLM plane's and the webhooks' figures. Under Miniflare the",
	"Worker, the Cache API, Durable Objects, Queues and D1 share workerd's one thread, so every operation a request",
	"makes is paid on the thread that serves the requests. The section between its markers is rewritten by each run.",
].join("\n");
const UPSTREAM_START_TIMEOUT_MS = 10_000;

/** The upstream: a chat-completion-sized JSON answer, in a Node process of its own. */
const UPSTREAM = `
const body = JSON.stringify({ id: "chatcmpl-1", object: "chat.completion", created: 0, model: "ok",
  choices: [{ index: 0, message: { role: "assistant", content: "Hello from the stub." }, finish_reason: "stop" }],
  usage: { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 } });
const server = require("node:http").createServer((req, res) => {
  req.resume();
  req.on("end", () => { res.setHeader("content-type", "application/json"); res.end(body); });
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();`;

/** One Worker, one route per operation. Keys are unique per request, so every lookup misses. */
const WORKER = `
import { DurableObject } from "cloudflare:workers";
export class Ledger extends DurableObject {
	constructor(ctx, env) {
		super(ctx, env);
		ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, tokens INTEGER)");
		ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS budget (id INTEGER PRIMARY KEY, used INTEGER)");
	}
	noop() { return { ok: true }; }
	reserve(id) {
		this.ctx.storage.sql.exec("INSERT OR REPLACE INTO reservations VALUES (?, 100)", id);
		this.ctx.storage.sql.exec("INSERT INTO budget VALUES (1, 0) ON CONFLICT(id) DO UPDATE SET used = used");
		return { ok: true, id };
	}
	settle(id) {
		this.ctx.storage.sql.exec("DELETE FROM reservations WHERE id = ?", id);
		this.ctx.storage.sql.exec("UPDATE budget SET used = used + 17 WHERE id = 1");
		return { ok: true };
	}
}
const ANSWER = JSON.stringify({ id: "chatcmpl-1", object: "chat.completion", created: 0, model: "ok",
	choices: [{ index: 0, message: { role: "assistant", content: "x".repeat(300) }, finish_reason: "stop" }],
	usage: { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 } });
const COLUMNS = 20;
const row = (id) => [id, ...Array.from({ length: COLUMNS - 1 }, (_, i) => (i % 2 ? i : "value-" + i))];
let n = 0;
const cached = () => new Response(ANSWER, { headers: { "content-type": "application/json", "cache-control": "max-age=3600" } });
async function forward(env) {
	const r = await fetch(env.UPSTREAM, { method: "POST", body: "{}" });
	return new Response(r.body, r);
}
const routes = {
	"/nothing": async () => new Response("ok"),
	"/fetch": async (env) => forward(env),
	"/cache-match": async (env, key) => new Response((await caches.default.match(key)) ? "hit" : "miss"),
	"/cache-put": async (env, key) => { await caches.default.put(key, cached()); return new Response("ok"); },
	"/do-noop": async (env) => Response.json(await env.LEDGER.getByName("t").noop()),
	"/do-reserve": async (env, key) => Response.json(await env.LEDGER.getByName("t").reserve(key)),
	"/queue-send": async (env, key) => { await env.QUEUE.send({ key, answer: ANSWER }); return new Response("ok"); },
	"/d1-insert": async (env, key) => {
		await env.DB.prepare("INSERT INTO rows VALUES (" + Array(COLUMNS).fill("?").join(", ") + ")").bind(...row(key)).run();
		return new Response("ok");
	},
	"/d1-batch-20": async (env, key) => {
		const statement = env.DB.prepare("INSERT INTO rows VALUES (" + Array(COLUMNS).fill("?").join(", ") + ")");
		await env.DB.batch(Array.from({ length: 20 }, (_, i) => statement.bind(...row(key + "-" + i))));
		return new Response("ok");
	},
	"/d1-json-20": async (env, key) => {
		const values = Array.from({ length: COLUMNS }, (_, i) => "value ->> " + i).join(", ");
		const rows = JSON.stringify(Array.from({ length: 20 }, (_, i) => row(key + "-" + i)));
		await env.DB.prepare("INSERT INTO rows SELECT " + values + " FROM json_each(?) WHERE true").bind(rows).run();
		return new Response("ok");
	},
	"/floor-cache": async (env, key, ctx) => {
		if (await caches.default.match(key)) return new Response("hit");
		const answer = await forward(env);
		ctx.waitUntil(caches.default.put(key, cached()));
		return answer;
	},
	"/floor-cache-budget": async (env, key, ctx) => {
		const ledger = env.LEDGER.getByName("t");
		const [hit] = await Promise.all([caches.default.match(key), ledger.reserve(key)]);
		if (hit) return new Response("hit");
		const answer = await forward(env);
		ctx.waitUntil(Promise.all([caches.default.put(key, cached()), env.LEDGER.getByName("t").settle(key)]));
		return answer;
	},
};
export default {
	async fetch(request, env, ctx) {
		const url = new URL(request.url);
		const route = routes[url.pathname];
		if (!route) return new Response("no such route", { status: 404 });
		// A fixed ?key= only for the checks before measuring; measured requests never repeat a key.
		return route(env, "https://primitives.internal/" + (url.searchParams.get("key") ?? Date.now() + "-" + n++), ctx);
	},
	async queue(batch) { for (const message of batch.messages) message.ack(); },
};`;

/** [route, what it does] in the order they are reported. @type {[string, string][]} */
const ROUTES = [
	["/nothing", "returns a fixed response: the Worker's floor"],
	["/fetch", "one subrequest to the upstream, its body streamed back (the LLM bench's pass-through)"],
	["/cache-match", "one Cache API lookup that misses"],
	["/cache-put", "one Cache API write of a ~0.5 KB answer"],
	["/do-noop", "one Durable Object RPC that does nothing"],
	["/do-reserve", "one Durable Object RPC that writes two SQLite rows (a reservation)"],
	["/queue-send", "one Queues send (the consumer acknowledges it)"],
	["/d1-insert", "one D1 insert of a 20-column row"],
	["/d1-batch-20", "20 such rows as a D1 batch of 20 statements"],
	["/d1-json-20", "20 such rows as one statement (`json_each` over one JSON parameter)"],
	["/floor-cache", "`fetch` + a cache lookup that misses + the cache write after the answer"],
	["/floor-cache-budget", "`floor-cache` + a reserve RPC (beside the lookup) and a settle RPC after the answer"],
];

async function startUpstream() {
	const child = spawn(process.execPath, ["-e", UPSTREAM], { stdio: ["pipe", "pipe", "inherit"] });
	const killOnExit = () => child.kill("SIGKILL");
	process.once("exit", killOnExit);
	const port = await new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error("upstream did not start")), UPSTREAM_START_TIMEOUT_MS);
		child.stdout.once("data", (data) => {
			clearTimeout(timer);
			resolve(Number(String(data).trim()));
		});
		child.once("exit", (code) => reject(new Error(`upstream exited (${code})`)));
	});
	return {
		url: `http://127.0.0.1:${port}/`,
		stop: () => {
			process.off("exit", killOnExit);
			child.stdin.end();
		},
	};
}

const loadBefore = loadAverage();
const upstream = await startUpstream();
const mf = new Miniflare(
	convertV4MiniflareOptions({
		host: "127.0.0.1",
		port: 0,
		cf: false,
		log: new Log(LogLevel.WARN),
		handleStructuredLogs: () => {},
		workers: [
			{
				name: "primitives",
				modules: true,
				script: WORKER,
				compatibilityDate: "2025-09-01",
				compatibilityFlags: ["nodejs_compat"],
				bindings: { UPSTREAM: upstream.url },
				durableObjects: { LEDGER: { className: "Ledger", useSQLite: true } },
				d1Databases: ["DB"],
				queueProducers: { QUEUE: "primitives" },
				queueConsumers: { primitives: { maxBatchTimeout: 0.1 } },
				cache: true,
			},
		],
	}),
);
try {
	const origin = (await mf.ready).origin;
	const db = await mf.getD1Database("DB");
	const columns = Array.from({ length: 20 }, (_, i) => (i === 0 ? "id TEXT PRIMARY KEY" : `c${i}`)).join(", ");
	await db.prepare(`CREATE TABLE rows (${columns})`).run();
	for (const [route] of ROUTES) {
		const res = await fetch(new URL(route, origin), { method: "POST", body: "{}" });
		if (res.status !== 200) throw new Error(`${route} answered ${res.status}: ${await res.text()}`);
		await res.arrayBuffer();
	}
	// The floor routes' writes happen after their answers: check that they land (a repeated key is a hit).
	for (const route of ["/floor-cache", "/floor-cache-budget"]) {
		const url = new URL(`${route}?key=check${route}`, origin);
		await (await fetch(url, { method: "POST", body: "{}" })).arrayBuffer();
		let hit = false;
		for (let i = 0; i < 50 && !hit; i++) {
			await sleep(20);
			hit = (await (await fetch(url, { method: "POST", body: "{}" })).text()) === "hit";
		}
		if (!hit) throw new Error(`${route}: its cache write never landed`);
	}
	const pids = workerdPids();
	/** @type {Map<string, { rps: number[]; cpu: number[] }>} */
	const figures = new Map(ROUTES.map(([route]) => [route, { rps: [], cpu: [] }]));
	say(`bench: ${ROUTES.length} routes, ${ROUNDS} × ABBA rounds of ${DURATION_S} s at ${CONNECTIONS} connections…`);
	for (let round = 0; round < ROUNDS; round++) {
		const order = ROUTES.map(([route]) => route);
		for (const route of [...order, ...order.reverse()]) {
			const url = new URL(route, origin).href;
			const load = { url, method: /** @type {const} */ ("POST"), body: "{}", connections: CONNECTIONS };
			await runAutocannon({ ...load, duration: WARMUP_S });
			const before = cpuNow({ workerd: pids });
			const run = await runAutocannon({ ...load, duration: DURATION_S });
			const after = cpuNow({ workerd: pids });
			const bad = Object.keys(run.statuses).filter((s) => s !== "200");
			if (bad.length || run.result.errors || run.result.timeouts) {
				throw new Error(`${route}: statuses ${JSON.stringify(run.statuses)}, errors ${run.result.errors}`);
			}
			const f = figures.get(route);
			f?.rps.push(run.ok / ((run.last - run.started) / 1000));
			f?.cpu.push((after.workerd - before.workerd) / run.ok);
			say(`  ${route.padEnd(20)} ${Math.round(f?.rps.at(-1) ?? 0)} req/s  ${ms(f?.cpu.at(-1) ?? 0, 3)} CPU ms/req`);
		}
	}
	say(`bench: one request in flight, ${SAMPLES} per route (after 100), routes shuffled each pass…`);
	/** @type {Map<string, number[]>} */
	const times = new Map(ROUTES.map(([route]) => [route, []]));
	const random = mulberry32(20261122);
	for (let i = 0; i < 100 + SAMPLES; i++) {
		// A fresh order each pass, so no route always follows the one whose background writes it would pay for.
		const order = ROUTES.map(([route]) => route);
		for (let k = order.length - 1; k > 0; k--) {
			const m = Math.floor(random() * (k + 1));
			[order[k], order[m]] = [order[m] ?? "", order[k] ?? ""];
		}
		for (const route of order) {
			const started = process.hrtime.bigint();
			const res = await fetch(new URL(route, origin), { method: "POST", body: "{}" });
			const body = await res.text();
			const took = Number(process.hrtime.bigint() - started) / 1e6;
			if (res.status !== 200) throw new Error(`${route} answered ${res.status}`);
			if (body === "hit") throw new Error(`${route}: a measured request was a cache hit`);
			if (i >= 100) times.get(route)?.push(took);
		}
	}
	const latency = (/** @type {string} */ route) => median(times.get(route) ?? []);
	const cpu = (/** @type {string} */ route) => median(figures.get(route)?.cpu ?? []);
	const rps = (/** @type {string} */ route) => median(figures.get(route)?.rps ?? []);
	const base = cpu("/nothing");
	const facts = machineFacts(loadBefore);
	const ratio = (/** @type {string} */ route) => `${((100 * rps(route)) / rps("/fetch")).toFixed(1)} %`;
	const lines = [
		`### Latest primitives run: ${facts.date}`,
		"",
		`- A Worker that only fetches the upstream serves ${Math.round(rps("/fetch"))} req/s at ${ms(cpu("/fetch"), 3)} ms of workerd CPU per request.`,
		`- Adding only a cache lookup that misses and the write after it (\`/floor-cache\`): ${Math.round(rps("/floor-cache"))} req/s = **${ratio("/floor-cache")}** of it (${ms(cpu("/floor-cache"), 3)} CPU ms/req).`,
		`- Adding also a budget reserve and settle (\`/floor-cache-budget\`): ${Math.round(rps("/floor-cache-budget"))} req/s = **${ratio("/floor-cache-budget")}** (${ms(cpu("/floor-cache-budget"), 3)} CPU ms/req).`,
		`- One request in flight: \`/floor-cache\` adds **+${ms(latency("/floor-cache") - latency("/fetch"), 3)} ms** to \`/fetch\`'s median, \`/floor-cache-budget\` **+${ms(latency("/floor-cache-budget") - latency("/fetch"), 3)} ms**.`,
		"",
		`| route | what it does | req/s (median of ${ROUNDS * 2}) | workerd CPU ms/req | CPU over \`nothing\` | one in flight: median ms | over \`nothing\` |`,
		"| --- | --- | ---: | ---: | ---: | ---: | ---: |",
		...ROUTES.map(([route, what]) => {
			const first = route === "/nothing";
			const overCpu = first ? "—" : `+${ms(cpu(route) - base, 3)}`;
			const overTime = first
				? "—"
				: `${latency(route) >= latency("/nothing") ? "+" : "−"}${ms(Math.abs(latency(route) - latency("/nothing")), 3)}`;
			return `| \`${route}\` | ${what} | ${Math.round(rps(route))} | ${ms(cpu(route), 3)} | ${overCpu} | ${ms(latency(route), 3)} | ${overTime} |`;
		}),
		"",
		"#### How these figures were taken",
		"",
		`- One Worker (the script in bench/primitives.mjs) under \`new Miniflare(...)\` with its own HTTP listener on`,
		"  127.0.0.1: the Cache API, one SQLite-backed Durable Object, a queue with a consumer and D1, all local; the",
		"  upstream is a Node HTTP server in a process of its own answering a fixed chat completion.",
		`- autocannon, ${CONNECTIONS} keep-alive connections, POST, a ${WARMUP_S} s warm-up then ${DURATION_S} s per route,`,
		`  ${ROUNDS} rounds in ABBA order; every answer must be 200. Cache keys are unique per request (every lookup misses).`,
		`- One in flight: ${SAMPLES} requests per route after 100 unmeasured, routes in a fresh random order each pass`,
		"  (no route always follows another's background writes); each timed from sending to",
		"  its last body byte with Node's fetch; the median.",
		"- workerd CPU = user + system time of Miniflare's workerd process over the run (from /proc), divided by the",
		"  requests answered; it includes the queue consumer's and the storage services' work.",
		`- Machine: ${facts.cpu}, nproc ${facts.nproc}, ${facts.memory}; load ${facts.load}; Node ${facts.node};`,
		`  ${facts.versions}.`,
	];
	if (args.flag["no-write"]) say(lines.join("\n"));
	else writeResults("bench/primitives.mjs", lines, INTRO);
} finally {
	await mf.dispose();
	upstream.stop();
}
