/**
 * The dead-letter queue's consumer: each dead event is stored in D1 with the failures its handlers last
 * recorded. Reading and replaying them is src/dead-letters' (it audits replays, so it stands above audit).
 */
import { asc, eq, sql } from "drizzle-orm";
import type { z } from "zod";
import { config } from "../config";
import { database, deadLetters, eventFailures } from "../db";
import { log } from "../http";
import { errorText, randomHex, truncate } from "../lib";
import { type EventEnvelope, EventEnvelopeSchema } from "./envelope";
import { retryDelaySeconds } from "./retry";

/** The `type` of a stored message that was not a valid envelope (valid types are dotted, so never this). */
export const INVALID_EVENT_TYPE = "invalid";

const MAX_STORED_ERROR_CHARS = 2000;

function newDeadLetterId(): string {
	return `dl_${randomHex(16)}`;
}

/**
 * Consumes a batch of the dead-letter queue: each message is stored (or, for an event seen before,
 * updated and set back to "dead") with the failures its handlers last recorded, then acked. A message
 * that cannot be stored is retried; one message's trouble never touches another.
 */
export async function handleDeadLetterBatch(batch: MessageBatch<unknown>, env: Env): Promise<void> {
	await Promise.all(
		batch.messages.map(async (message) => {
			try {
				const parsed = EventEnvelopeSchema.safeParse(message.body);
				if (parsed.success) await recordDeadLetter(env, parsed.data);
				else await recordInvalidMessage(env, message, parsed.error);
				message.ack();
			} catch (err) {
				const delaySeconds = retryDelaySeconds(message.attempts);
				message.retry({ delaySeconds });
				log("error", "storing a dead letter failed", {
					queue: batch.queue,
					messageId: message.id,
					attempts: message.attempts,
					delaySeconds,
					error: errorText(err),
				});
			}
		}),
	);
}

/** Stores a dead event with the last error of each handler that still fails it, and the attempt count. */
export async function recordDeadLetter(env: Pick<Env, "DB">, event: EventEnvelope): Promise<void> {
	const db = database(env.DB);
	const failures = await db
		.select({ handler: eventFailures.handler, attempts: eventFailures.attempts, lastError: eventFailures.lastError })
		.from(eventFailures)
		.where(eq(eventFailures.eventId, event.id))
		.orderBy(asc(eventFailures.handler))
		.all();
	const error =
		failures.length > 0
			? truncate(failures.map((f) => `${f.handler}: ${f.lastError}`).join("\n"), MAX_STORED_ERROR_CHARS)
			: "No handler failure was recorded: the consumer may have crashed or run out of time.";
	const attempts = failures.reduce((max, f) => Math.max(max, f.attempts), 0);
	const stored = await db
		.insert(deadLetters)
		.values({
			id: newDeadLetterId(),
			eventId: event.id,
			tenantId: event.tenantId,
			type: event.type,
			event,
			error,
			attempts,
			status: "dead",
		})
		.onConflictDoUpdate({
			target: deadLetters.eventId,
			set: { error, attempts, status: "dead" },
			// An event id is unique across tenants; should two ever collide, neither tenant's row changes hands.
			setWhere: sql`${deadLetters.tenantId} = excluded.tenant_id`,
		})
		.returning({ id: deadLetters.id })
		.all();
	if (stored.length === 0) {
		log("error", "dead letter refused: its event id belongs to another tenant's dead letter", {
			eventId: event.id,
			tenantId: event.tenantId,
		});
	}
}

/**
 * Stores a message that is not a valid envelope, which no retry can fix. Its tenant cannot be trusted,
 * so it belongs to the operator tenant; it is kept for inspection and cannot be replayed.
 */
export async function recordInvalidMessage(env: Env, message: Message<unknown>, error: z.ZodError): Promise<void> {
	const issues = error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ");
	const text = truncate(`Invalid event envelope: ${issues}`, MAX_STORED_ERROR_CHARS);
	await database(env.DB)
		.insert(deadLetters)
		.values({
			id: newDeadLetterId(),
			eventId: `msg:${message.id}`,
			tenantId: config(env).OPERATOR_TENANT,
			type: INVALID_EVENT_TYPE,
			event: jsonSafe(message.body),
			error: text,
			attempts: message.attempts,
			status: "dead",
		})
		.onConflictDoUpdate({ target: deadLetters.eventId, set: { error: text, attempts: message.attempts } })
		.run();
}

/** A message body as JSON; bodies that are not JSON (v8-serialised values) are described instead. */
function jsonSafe(body: unknown): unknown {
	try {
		const text = JSON.stringify(body);
		return text === undefined ? { unserializable: typeof body } : JSON.parse(text);
	} catch {
		return { unserializable: typeof body };
	}
}
