/** Benchmarks only (bench/rows.mjs): counts the D1 and Durable Object rows each entry point writes. */
import { circuitBreakerFor } from "../../src/breaker";
import { rateLimiterFor } from "../../src/ratelimit";
import { meterD1, type RowsCounter } from "./d1-meter";

/** The Worker's entry points, each with its own D1 counter. */
export type BenchEntry = "fetch" | "queue" | "scheduled";

/**
 * With `BENCH_ROWS=1` set, in ENVIRONMENT development or test only, each entry point runs on a copy of its env whose `DB`
 * adds every statement's `meta.rows_written` to that entry point's counter (one per isolate), and
 * `GET /__bench/rows` answers the counts and the `rowsWritten()` of the Durable Objects named in its
 * query (`limiter=<name>`, `breaker=<name>`, repeatable). No wrangler.toml environment sets it.
 */
export interface BenchRows {
	/** The env the entry point should run with: `DB` metered. */
	env: Env;
	/** The report when `request` is `GET /__bench/rows`, else undefined. */
	route(request: Request): Promise<Response> | undefined;
}

/** Unauthenticated and creating Durable Objects by name: local environments only, never staging or production. */
const BENCH_ENVIRONMENTS = new Set(["development", "test"]);

const counters = new Map<BenchEntry, RowsCounter>();
const metered = new WeakMap<Env, Map<BenchEntry, BenchRows>>();

/** The bench meter of `entry` for `env`, or undefined when `BENCH_ROWS` is not set or ENVIRONMENT is not development/test. */
export function benchRows(env: Env, entry: BenchEntry): BenchRows | undefined {
	if ((env as { BENCH_ROWS?: string }).BENCH_ROWS !== "1" || !BENCH_ENVIRONMENTS.has(env.ENVIRONMENT)) return undefined;
	let byEntry = metered.get(env);
	if (!byEntry) {
		byEntry = new Map();
		metered.set(env, byEntry);
	}
	let rows = byEntry.get(entry);
	if (!rows) {
		const { db, counter } = meterD1(env.DB);
		counters.set(entry, counter);
		const wrapped = { ...env, DB: db };
		rows = { env: wrapped, route: (request) => report(request, wrapped) };
		byEntry.set(entry, rows);
	}
	return rows;
}

function report(request: Request, env: Env): Promise<Response> | undefined {
	const url = new URL(request.url);
	if (request.method !== "GET" || url.pathname !== "/__bench/rows") return undefined;
	return (async () => {
		const d1: Record<string, number> = {};
		for (const [entry, counter] of counters) d1[entry] = counter.written;
		const limiters: Record<string, number> = {};
		const breakers: Record<string, number> = {};
		for (const name of url.searchParams.getAll("limiter")) {
			limiters[name] = await rateLimiterFor(env, name).rowsWritten();
		}
		for (const name of url.searchParams.getAll("breaker")) {
			breakers[name] = await circuitBreakerFor(env, name).rowsWritten();
		}
		return Response.json({ d1, limiters, breakers });
	})();
}
