/** Publishing: every plane puts its events on the EVENTS queue through here. */
import { type EventEnvelope, EventEnvelopeSchema } from "./envelope";

/** Queues limits: at most 100 messages and 256 KB per sendBatch, 128 KB per message (1 KB = 1000 bytes). */
export const MAX_BATCH_MESSAGES = 100;
export const MAX_BATCH_BYTES = 256_000;
export const MAX_MESSAGE_BYTES = 128_000;
/** Room for the ~100 bytes of metadata Queues counts against each message. */
const MESSAGE_OVERHEAD_BYTES = 128;

const encoder = new TextEncoder();

/**
 * Validates and enqueues events, split into as few sendBatch calls as the limits allow. Resolves once
 * the queue has accepted them all: only then may the caller acknowledge whatever the events stand for.
 * Throws before sending anything if an event is invalid or too large for one message (put large
 * payloads in R2 and carry the key).
 */
export async function publish(env: Pick<Env, "EVENTS">, events: EventEnvelope | EventEnvelope[]): Promise<void> {
	const list = (Array.isArray(events) ? events : [events]).map((e) => EventEnvelopeSchema.parse(e));
	const sized = list.map((body) => {
		const bytes = encoder.encode(JSON.stringify(body)).byteLength + MESSAGE_OVERHEAD_BYTES;
		if (bytes > MAX_MESSAGE_BYTES) {
			throw new RangeError(`event ${body.id} is ${bytes} bytes; a queue message holds at most ${MAX_MESSAGE_BYTES}`);
		}
		return { body, bytes };
	});
	if (sized.length === 1 && sized[0]) {
		await env.EVENTS.send(sized[0].body, { contentType: "json" });
		return;
	}
	for (const batch of batches(sized)) {
		await env.EVENTS.sendBatch(batch.map((body) => ({ body, contentType: "json" as const })));
	}
}

/** Greedy split under the message-count and byte limits, keeping the order. */
function batches(sized: Array<{ body: EventEnvelope; bytes: number }>): EventEnvelope[][] {
	const out: EventEnvelope[][] = [];
	let current: EventEnvelope[] = [];
	let bytes = 0;
	for (const item of sized) {
		if (current.length === MAX_BATCH_MESSAGES || bytes + item.bytes > MAX_BATCH_BYTES) {
			out.push(current);
			current = [];
			bytes = 0;
		}
		current.push(item.body);
		bytes += item.bytes;
	}
	if (current.length > 0) out.push(current);
	return out;
}
