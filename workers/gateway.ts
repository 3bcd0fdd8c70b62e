/** The entry points Cloudflare calls. Thin: parse, call src/, ack or retry. */
import { createApp } from "../src/app";
import { log } from "../src/http";

export { RateLimiter } from "../durable-objects/rate-limiter";

const app = createApp();

export default {
	fetch: app.fetch,

	async queue(batch) {
		// The events backbone (handlers, retries, dead letters) arrives with the events issue;
		// until then every message is logged by id and acknowledged.
		for (const message of batch.messages) {
			log("info", "event received", { queue: batch.queue, messageId: message.id, attempts: message.attempts });
			message.ack();
		}
	},
} satisfies ExportedHandler<Env>;
