/**
 * The benchmarks' entry point (bench/llm.mjs, bench/rows.mjs, bench/webhooks.mjs), never deployed: the
 * gateway's own handlers, plus the pass-through route (`BENCH_PASSTHROUGH_URL`), the webhook storage floor
 * (`BENCH_FLOOR`) and the rows meter (`BENCH_ROWS`).
 * The harness builds it with `wrangler deploy workers/bench.ts --dry-run` against wrangler.toml's bindings.
 */
import { benchFloor, benchPassthrough, benchRows, benchUpstream } from "../bench/worker";
import gateway from "./gateway";

export { CircuitBreaker, RateLimiter } from "./gateway";

export default {
	fetch(request, env, ctx) {
		const bench = benchUpstream(request, env);
		if (bench) return benchPassthrough(request, bench);
		const floor = benchFloor(request, env);
		if (floor) return floor;
		const rows = benchRows(env, "fetch");
		return rows?.route(request) ?? gateway.fetch(request, rows?.env ?? env, ctx);
	},

	queue(batch, env) {
		return gateway.queue(batch, benchRows(env, "queue")?.env ?? env);
	},

	scheduled(controller, env) {
		return gateway.scheduled(controller, benchRows(env, "scheduled")?.env ?? env);
	},
} satisfies ExportedHandler<Env>;
