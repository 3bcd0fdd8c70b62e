/** The entry points Cloudflare calls. Thin: parse, call src/, ack or retry. */
import { createApp } from "../src/app";
import { auditWriter } from "../src/audit";
import { breakerClientFor, breakerRegistry } from "../src/breaker";
import { config } from "../src/config";
import {
	type EventHandler,
	handleDeadLetterBatch,
	handleEventBatch,
	isDeadLetterQueue,
	registerHandlers,
} from "../src/events";
import { log } from "../src/http";
import { usageRecorder } from "../src/llm";
import { isRetentionRun, sweepRetention } from "../src/retention";
import { benchRows } from "../src/system";
import { deliveryStatusUpdater, forwarder, sweepWebhookDeliveries } from "../src/webhooks";

export { CircuitBreaker } from "../durable-objects/circuit-breaker";
export { RateLimiter } from "../durable-objects/rate-limiter";

const app = createApp();
const SWEEPS = ["webhook deliveries", "retention"] as const;

/**
 * Every handler of the events queue: each event goes to every handler whose `handles()` is true.
 * Names are recorded per event in `processed_events`, so they must be unique and never renamed.
 */
const HANDLERS: readonly EventHandler[] = registerHandlers([
	auditWriter,
	breakerRegistry,
	usageRecorder,
	deliveryStatusUpdater,
	forwarder({ breakers: breakerClientFor, retryScale: (env) => config(env).FORWARD_RETRY_SCALE }),
]);

/**
 * Benchmarks only (bench/llm.mjs): with `BENCH_PASSTHROUGH_URL` set, outside production, POST
 * `/__bench/passthrough` forwards the body to that URL and returns the answer, with no checks at
 * all — the floor any Worker pays for one subrequest, against which the LLM plane is measured.
 * No wrangler.toml environment sets it.
 */
function benchUpstream(request: Request, env: Env): string | undefined {
	const upstream = (env as { BENCH_PASSTHROUGH_URL?: string }).BENCH_PASSTHROUGH_URL;
	if (!upstream || env.ENVIRONMENT === "production" || !request.url.endsWith("/__bench/passthrough")) return undefined;
	return upstream;
}

async function benchPassthrough(request: Request, upstream: string): Promise<Response> {
	const answer = await fetch(upstream, {
		method: "POST",
		headers: {
			"content-type": "application/json",
			authorization: request.headers.get("x-upstream-authorization") ?? "",
		},
		body: request.body,
	});
	return new Response(answer.body, {
		status: answer.status,
		headers: { "content-type": answer.headers.get("content-type") ?? "application/json" },
	});
}

export default {
	fetch(request, env, ctx) {
		const bench = benchUpstream(request, env);
		if (bench) return benchPassthrough(request, bench);
		const rows = benchRows(env, "fetch");
		return rows?.route(request) ?? app.fetch(request, rows?.env ?? env, ctx);
	},

	async queue(batch, unmetered) {
		const env = benchRows(unmetered, "queue")?.env ?? unmetered;
		if (isDeadLetterQueue(batch.queue)) await handleDeadLetterBatch(batch, env);
		else await handleEventBatch(batch, env, HANDLERS);
	},

	async scheduled(controller, unmetered) {
		const env = benchRows(unmetered, "scheduled")?.env ?? unmetered;
		// Every few minutes, beside the minute's webhook sweep: the tables' retention (bounded per run).
		// Both run to the end whichever fails first; a failure is logged and then fails the invocation.
		const results = await Promise.allSettled([
			sweepWebhookDeliveries(env),
			isRetentionRun(controller.scheduledTime) ? sweepRetention(env, config(env).RETENTION) : null,
		]);
		const failed = results.flatMap((r, i) => (r.status === "rejected" ? [{ sweep: SWEEPS[i], error: r.reason }] : []));
		for (const f of failed) log("error", "scheduled sweep failed", { sweep: f.sweep, error: String(f.error) });
		if (failed[0]) throw failed[0].error;
	},
} satisfies ExportedHandler<Env>;
