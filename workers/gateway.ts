/** The entry points Cloudflare calls. Thin: parse, call src/, ack or retry. */
import { createApp } from "../src/app";
import { auditWriter } from "../src/audit";
import { breakerClientFor } from "../src/breaker";
import { config } from "../src/config";
import {
	type EventHandler,
	handleDeadLetterBatch,
	handleEventBatch,
	isDeadLetterQueue,
	registerHandlers,
} from "../src/events";
import { deliveryStatusUpdater, forwarder, sweepWebhookDeliveries } from "../src/webhooks";

export { CircuitBreaker } from "../durable-objects/circuit-breaker";
export { RateLimiter } from "../durable-objects/rate-limiter";

const app = createApp();

/**
 * Every handler of the events queue: each event goes to every handler whose `handles()` is true.
 * Names are recorded per event in `processed_events`, so they must be unique and never renamed.
 */
const HANDLERS: readonly EventHandler[] = registerHandlers([
	auditWriter,
	deliveryStatusUpdater,
	forwarder({ breakers: breakerClientFor, retryScale: (env) => config(env).FORWARD_RETRY_SCALE }),
]);

export default {
	fetch: app.fetch,

	async queue(batch, env) {
		if (isDeadLetterQueue(batch.queue)) await handleDeadLetterBatch(batch, env);
		else await handleEventBatch(batch, env, HANDLERS);
	},

	async scheduled(_controller, env) {
		await sweepWebhookDeliveries(env);
	},
} satisfies ExportedHandler<Env>;
