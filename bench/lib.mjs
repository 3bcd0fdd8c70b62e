// @ts-check
/**
 * What the benchmarks in bench/ share: statistics, formatting, an autocannon run that keeps every response's own
 * time, CPU time read from /proc, the facts about the machine a run reports, and the rewrite of a script's marked
 * section of bench/RESULTS.md. One copy, so every benchmark computes and reports its figures the same way.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import autocannon from "autocannon";
import { ROOT } from "../test/helpers/node/gateway.ts";

/**
 * Parses a benchmark's command line. Each of `counts` is `--name <n>` with the default given, and must be a
 * whole number in 1..1,000,000 or the run stops; `flags` are booleans (`--no-write`, …); `texts` are strings.
 * @template {string} C
 * @template {string} [F=never]
 * @template {string} [T=never]
 * @param {{ counts: Record<C, number>; flags?: readonly F[]; texts?: Record<T, string> }} spec
 * @returns {{ count: Record<C, number>; flag: Record<F, boolean>; text: Record<T, string> }}
 */
export function benchArgs({ counts, flags = [], texts }) {
	/** @type {Record<string, { type: "string"; default: string } | { type: "boolean"; default: boolean }>} */
	const options = {};
	for (const [name, fallback] of Object.entries(counts)) options[name] = { type: "string", default: String(fallback) };
	for (const [name, fallback] of Object.entries(texts ?? {}))
		options[name] = { type: "string", default: String(fallback) };
	for (const name of flags) options[name] = { type: "boolean", default: false };
	const { values } = parseArgs({ options });
	/** @type {Record<string, number>} */
	const count = {};
	for (const name of Object.keys(counts)) {
		const v = Number(values[name]);
		if (!Number.isInteger(v) || v < 1 || v > 1_000_000) throw new Error(`bad --${name}: ${values[name]}`);
		count[name] = v;
	}
	/** @type {Record<string, boolean>} */
	const flag = {};
	for (const name of flags) flag[name] = values[name] === true;
	/** @type {Record<string, string>} */
	const text = {};
	for (const name of Object.keys(texts ?? {})) text[name] = String(values[name]);
	return { count, flag, text };
}

/** Prints one line to stdout. */
export const say = (/** @type {string} */ line = "") => process.stdout.write(`${line}\n`);
/** Resolves after `ms` milliseconds. */
export const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/** Milliseconds with `digits` decimals, or "n/a". @param {number} n */
export const ms = (n, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
/** How a target is reported. */
export const pass = (/** @type {boolean} */ ok) => (ok ? "met" : "MISSED");

/**
 * The benchmarks' Worker script (`startGateway({ main })`, `buildWorker(mode, main)`): the gateway's handlers plus the
 * pass-through route and the rows meter (bench/worker/), kept out of the deployed bundle. Benchmarks that need
 * neither run wrangler.toml's `main`, the production entry.
 */
export const BENCH_MAIN = "workers/bench.ts";

/** Limits of the benchmarks' enterprise tenants: far above anything a run can reach, so no 429s. */
export const BENCH_LIMITS = { rate: { perSecond: 1_000_000, burst: 1_000_000_000 }, monthlyQuota: 1_000_000_000_000 };

// ---------------------------------------------------------------- statistics

/** The nearest-rank percentile of ascending values; NaN when there are none. @param {number[]} sorted @param {number} p */
export function percentile(sorted, p) {
	if (sorted.length === 0) return Number.NaN;
	const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
	return /** @type {number} */ (sorted[rank]);
}

/** The median (the mean of the middle two of an even count). @param {number[]} values */
export function median(values) {
	const s = [...values].sort((a, b) => a - b);
	const mid = s.length >> 1;
	return s.length % 2 ? percentile(s, 50) : (percentile(s, 50) + (s[mid] ?? Number.NaN)) / 2;
}

// ---------------------------------------------------------------- the Worker's log lines

/**
 * Counts the Worker's log lines by level (a JSON line's `level`, else Miniflare's) for `startGateway`'s `onLog`,
 * and keeps the first five lines other than info (300 characters each).
 */
export function workerLogTally() {
	/** @type {Record<string, number>} */
	const byLevel = {};
	/** @type {string[]} */
	const notable = [];
	const onLog = (/** @type {{ level: string; message: string }} */ { level, message }) => {
		const key = /"level":"(\w+)"/.exec(message)?.[1] ?? level;
		byLevel[key] = (byLevel[key] ?? 0) + 1;
		if (key !== "info" && key !== "log" && notable.length < 5) notable.push(message.slice(0, 300));
	};
	return { byLevel, notable, onLog };
}

// ---------------------------------------------------------------- load

/**
 * The part of an autocannon request the benchmarks use (autocannon ships no types).
 * @typedef {{ method?: string; path?: string; headers?: Record<string, string>; body?: Buffer | string;
 *   setupRequest?: (req: AutocannonRequest) => AutocannonRequest }} AutocannonRequest
 */

/**
 * One autocannon run, keeping every response's own time (fractional ms, from its `response` events) rather than
 * autocannon's 1 ms-resolution histogram. `started` and `last` (`performance.now()`) are the start of the run and
 * its last response: autocannon's own `duration` only ends on its next 1 s tick.
 * @param {Parameters<typeof autocannon>[0] & { amount?: number; requests?: AutocannonRequest[] }} options
 */
export async function runAutocannon(options) {
	/** @type {number[]} */
	const times = [];
	/** @type {Record<string, number>} */
	const statuses = {};
	const started = performance.now();
	let last = started;
	const instance = autocannon(options);
	instance.on(
		"response",
		(
			/** @type {unknown} */ _client,
			/** @type {number} */ status,
			/** @type {number} */ _bytes,
			/** @type {number} */ time,
		) => {
			last = performance.now();
			times.push(time);
			statuses[status] = (statuses[status] ?? 0) + 1;
		},
	);
	const result = await instance;
	times.sort((a, b) => a - b);
	const ok = Object.entries(statuses)
		.filter(([s]) => s.startsWith("2"))
		.reduce((n, [, c]) => n + c, 0);
	return { result, times, statuses, ok, started, last };
}

// ---------------------------------------------------------------- CPU accounting

let clockTicks = 100;
try {
	clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
} catch {}

/** This process's workerd children (Miniflare's runtime), from /proc; empty where there is no /proc. */
export function workerdPids() {
	/** @type {number[]} */
	const pids = [];
	try {
		for (const entry of readdirSync("/proc")) {
			if (!/^\d+$/.test(entry)) continue;
			try {
				const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(readFileSync(`/proc/${entry}/stat`, "utf8"));
				if (m?.[1] === "workerd" && Number(m[2]) === process.pid) pids.push(Number(entry));
			} catch {}
		}
	} catch {}
	return pids;
}

/** User + system CPU ms of processes (all their threads), from /proc/<pid>/stat; NaN when unreadable. @param {number[]} pids */
function processCpuMs(pids) {
	if (pids.length === 0) return Number.NaN;
	let total = 0;
	for (const pid of pids) {
		try {
			const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
			const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
			total += ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
		} catch {
			return Number.NaN;
		}
	}
	return total;
}

/**
 * CPU time used so far (ms): by each group of processes (from /proc, NaN when unreadable) and, as `node`, by this
 * Node process (`process.cpuUsage()`: the load generator and Miniflare's Node side, which reads the Worker's logs).
 * @template {string} K
 * @param {Record<K, number[]>} groups
 * @returns {Record<K | "node", number>}
 */
export function cpuNow(groups) {
	const own = process.cpuUsage();
	/** @type {Record<string, number>} */
	const out = { node: (own.user + own.system) / 1000 };
	for (const [name, pids] of /** @type {[string, number[]][]} */ (Object.entries(groups))) {
		out[name] = processCpuMs(pids);
	}
	return /** @type {Record<K | "node", number>} */ (out);
}

// ---------------------------------------------------------------- the machine

/** The 1-minute load average (0 where the platform has none). */
export const loadAverage = () => os.loadavg()[0] ?? 0;

/** @param {string} name */
function packageVersion(name) {
	try {
		return JSON.parse(readFileSync(join(ROOT, "node_modules", name, "package.json"), "utf8")).version;
	} catch {
		return "?";
	}
}

/**
 * What a run reports about where it ran, taken at its end. @param {number} loadBefore `loadAverage()` at its start
 */
export function machineFacts(loadBefore) {
	const loadAfter = loadAverage();
	const cpus = os.cpus();
	let nproc = String(cpus.length);
	try {
		nproc = execFileSync("nproc", { encoding: "utf8" }).trim();
	} catch {}
	return {
		date: new Date().toISOString(),
		nproc,
		cpu: `${cpus[0]?.model ?? "?"} (${cpus.length} logical CPUs visible to Node)`,
		memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
		load: `${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after (1-min load average; the machine is shared)`,
		node: process.version,
		platform: `${os.type()} ${os.release()} ${os.arch()}`,
		versions: `miniflare ${packageVersion("miniflare")}, workerd ${packageVersion("workerd")}, wrangler ${packageVersion("wrangler")}, autocannon ${packageVersion("autocannon")}`,
	};
}

// ---------------------------------------------------------------- bench/RESULTS.md

const RESULTS = join(ROOT, "bench", "RESULTS.md");

/**
 * Replaces `script`'s marked section of bench/RESULTS.md with `lines` between its BEGIN and END markers; where the
 * file has no such section yet, appends it, after `intro` when given. Then lays the file out as the project's
 * formatter does, so `biome check .` stays clean.
 * @param {string} script the benchmark's path from the repository root, e.g. `bench/gateway.mjs`
 * @param {string[]} lines
 * @param {string} [intro]
 */
export function writeResults(script, lines, intro) {
	const begin = `<!-- BEGIN ${script} (generated: do not edit by hand) -->`;
	const end = `<!-- END ${script} -->`;
	const section = [begin, ...lines, end].join("\n");
	const current = existsSync(RESULTS) ? readFileSync(RESULTS, "utf8") : "# Benchmark results\n";
	const from = current.indexOf(begin);
	const to = current.indexOf(end);
	const next =
		from >= 0 && to > from
			? `${current.slice(0, from)}${section}${current.slice(to + end.length)}`
			: `${[current.trimEnd(), ...(intro === undefined ? [] : [intro]), section].join("\n\n")}\n`;
	writeFileSync(RESULTS, next);
	try {
		const biome = join(ROOT, "node_modules", "@biomejs", "biome", "bin", "biome");
		execFileSync(process.execPath, [biome, "format", "--write", RESULTS], { cwd: ROOT, stdio: "ignore" });
	} catch {
		say("bench: could not run biome format on RESULTS.md; run `npm run format`");
	}
	say(`bench: wrote ${RESULTS}`);
}
