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

export default {
	fetch(request, env, ctx) {
		return app.fetch(request, env, ctx);
	},

	async queue(batch, env) {
		if (isDeadLetterQueue(batch.queue)) await handleDeadLetterBatch(batch, env);
		else await handleEventBatch(batch, env, HANDLERS);
	},

	async scheduled(controller, env) {
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
