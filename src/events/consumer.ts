/** The events consumer: validates each message, fans it out to the handlers, records what is done, retries what failed. */
import { and, eq, inArray, sql } from "drizzle-orm";
import { type Database, database, eventFailures, processedEvents } from "../db";
import { log, parseTraceparent } from "../http";
import { errorText, orTimeout } from "../lib";
import { recordInvalidMessage } from "./dead-letters";
import { type EventEnvelope, EventEnvelopeSchema } from "./envelope";
import type { EventHandler } from "./handler";
import { EVENT_RETRY, type RetryPolicy, retryDelaySeconds } from "./retry";

/** How long one handler may take with one event before it counts as failed. */
export const HANDLER_TIMEOUT_MS = 60_000;

/** D1 refuses a statement with more than 100 bound parameters. */
const MAX_IDS_PER_QUERY = 90;

export interface ConsumerOptions {
	retry?: RetryPolicy;
	handlerTimeoutMs?: number;
}

/** What became of one message; returned for logs and tests. */
export interface MessageOutcome {
	messageId: string;
	eventId?: string;
	/** `duplicate`: another copy of the same event is in this batch; it alone runs the handlers. */
	outcome: "acked" | "retried" | "dead-lettered" | "duplicate";
	/** Handlers that ran and succeeded in this delivery. */
	ran: string[];
	/** Handlers that failed in this delivery (they run again on redelivery). */
	failed: string[];
	delaySeconds?: number;
}

/** Whether a queue is a dead-letter queue: `edgeway-events-dlq`, `edgeway-<env>-events-dlq`. */
export function isDeadLetterQueue(queue: string): boolean {
	return queue.endsWith("-dlq");
}

/** Checks the handler list once, where it is assembled: names must be non-empty and unique. */
export function registerHandlers(handlers: readonly EventHandler[]): readonly EventHandler[] {
	const seen = new Set<string>();
	for (const h of handlers) {
		if (!h.name.trim()) throw new Error("An event handler needs a name");
		if (seen.has(h.name)) throw new Error(`Two event handlers are named ${h.name}`);
		seen.add(h.name);
	}
	return Object.freeze([...handlers]);
}

/**
 * Consumes a batch of the events queue. Each message is settled on its own — acked when every
 * handler that wants it has succeeded (now or on an earlier delivery), retried with back-off when one
 * failed, dead-lettered at once when it is not a valid envelope — so one message never holds up or
 * fails another. Never throws.
 */
export async function handleEventBatch(
	batch: MessageBatch<unknown>,
	env: Env,
	handlers: readonly EventHandler[],
	options: ConsumerOptions = {},
): Promise<MessageOutcome[]> {
	const db = database(env.DB);
	const policy = options.retry ?? EVENT_RETRY;
	const timeoutMs = options.handlerTimeoutMs ?? HANDLER_TIMEOUT_MS;

	const parsed = batch.messages.map((message) => ({ message, result: EventEnvelopeSchema.safeParse(message.body) }));
	// Two copies of one event (a sweep, a re-enqueue, a replay) in one batch must not run handlers twice.
	const firstCopy = new Map<string, string>();
	for (const { message, result } of parsed) {
		if (result.success && !firstCopy.has(result.data.id)) firstCopy.set(result.data.id, message.id);
	}
	const eventIds = parsed.flatMap((p) => (p.result.success ? [p.result.data.id] : []));
	let done: Map<string, Set<string>> | undefined;
	let lookupError: string | undefined;
	try {
		done = await processedHandlers(
			db,
			eventIds,
			handlers.filter((h) => !h.idempotent).map((h) => h.name),
		);
	} catch (err) {
		lookupError = errorText(err);
	}

	return Promise.all(
		parsed.map(async ({ message, result }): Promise<MessageOutcome> => {
			try {
				if (!result.success) {
					await recordInvalidMessage(env, message, result.error);
					message.ack();
					log("warn", "invalid event dead-lettered", { queue: batch.queue, messageId: message.id });
					return { messageId: message.id, outcome: "dead-lettered", ran: [], failed: [] };
				}
				if (firstCopy.get(result.data.id) !== message.id) {
					message.ack();
					return { messageId: message.id, eventId: result.data.id, outcome: "duplicate", ran: [], failed: [] };
				}
				if (!done) throw new Error(`processed_events lookup failed: ${lookupError}`);
				return await consume(message, result.data, env, db, handlers, done.get(result.data.id), policy, timeoutMs);
			} catch (err) {
				// Nothing was settled for this message (the database is likely unavailable): try again later.
				const delaySeconds = retryDelaySeconds(message.attempts, policy);
				message.retry({ delaySeconds });
				log("error", "event consumer failed", {
					queue: batch.queue,
					messageId: message.id,
					attempts: message.attempts,
					delaySeconds,
					error: errorText(err),
				});
				return {
					messageId: message.id,
					eventId: result.success ? result.data.id : undefined,
					outcome: "retried",
					ran: [],
					failed: [],
					delaySeconds,
				};
			}
		}),
	);
}

interface Failure {
	handler: string;
	error: string;
}

async function consume(
	message: Message<unknown>,
	event: EventEnvelope,
	env: Env,
	db: Database,
	handlers: readonly EventHandler[],
	done: Set<string> | undefined,
	policy: RetryPolicy,
	timeoutMs: number,
): Promise<MessageOutcome> {
	const failures: Failure[] = [];
	const pending: EventHandler[] = [];
	for (const h of handlers) {
		if (done?.has(h.name)) continue;
		try {
			if (h.handles(event)) pending.push(h);
		} catch (err) {
			failures.push({ handler: h.name, error: `handles() threw: ${errorText(err)}` });
		}
	}

	const ran: string[] = [];
	await Promise.all(
		pending.map(async (h) => {
			try {
				await orTimeout(
					h.handle(event, env),
					timeoutMs,
					() => new Error(`handler ${h.name} timed out after ${timeoutMs} ms`),
				);
			} catch (err) {
				failures.push({ handler: h.name, error: errorText(err) });
				return;
			}
			try {
				// An idempotent handler keeps no record, but clears a failure of an earlier delivery or of the
				// replayed dead letter (a new message, attempts = 1); a DELETE matching nothing writes no row.
				if (!h.idempotent) await markProcessed(db, event.id, h.name);
				else await clearFailure(db, event.id, h.name);
				ran.push(h.name);
			} catch (err) {
				// The effect happened but is not recorded: the handler runs again, which its contract allows.
				failures.push({ handler: h.name, error: `recording success failed: ${errorText(err)}` });
			}
		}),
	);

	const base = { messageId: message.id, eventId: event.id, ran: ran.sort() };
	if (failures.length === 0) {
		message.ack();
		return { ...base, outcome: "acked", failed: [] };
	}

	// A handler may bring its own schedule (the webhook forwarder follows Standard Webhooks'); the
	// message waits for the slowest of the failed handlers.
	const delaySeconds = Math.max(
		...failures.map((f) => {
			const own = pending.find((h) => h.name === f.handler)?.retryDelaySeconds?.(message.attempts, env);
			return own ?? retryDelaySeconds(message.attempts, policy);
		}),
	);
	const traceId = parseTraceparent(event.traceparent)?.traceId;
	try {
		await recordFailures(db, event.id, failures);
	} catch (err) {
		log("error", "recording event failures failed", { eventId: event.id, error: errorText(err) });
	}
	message.retry({ delaySeconds });
	for (const f of failures) {
		log("warn", "event handler failed", {
			eventId: event.id,
			type: event.type,
			tenantId: event.tenantId,
			traceId,
			handler: f.handler,
			attempts: message.attempts,
			delaySeconds,
			error: f.error,
		});
	}
	return { ...base, outcome: "retried", failed: failures.map((f) => f.handler).sort(), delaySeconds };
}

/** The handlers already done for each event, in as few queries as D1's parameter limit allows. */
async function processedHandlers(
	db: Database,
	eventIds: string[],
	handlerNames: string[],
): Promise<Map<string, Set<string>>> {
	const done = new Map<string, Set<string>>();
	const ids = [...new Set(eventIds)];
	if (ids.length === 0 || handlerNames.length === 0) return done;
	for (let i = 0; i < ids.length; i += MAX_IDS_PER_QUERY) {
		const rows = await db
			.select({ eventId: processedEvents.eventId, handler: processedEvents.handler })
			.from(processedEvents)
			.where(inArray(processedEvents.eventId, ids.slice(i, i + MAX_IDS_PER_QUERY)))
			.all();
		for (const row of rows) {
			const set = done.get(row.eventId) ?? new Set<string>();
			set.add(row.handler);
			done.set(row.eventId, set);
		}
	}
	return done;
}

function failureOf(db: Database, eventId: string, handler: string) {
	return db.delete(eventFailures).where(and(eq(eventFailures.eventId, eventId), eq(eventFailures.handler, handler)));
}

/** Records a handler's success and clears its failure, atomically. */
async function markProcessed(db: Database, eventId: string, handler: string): Promise<void> {
	await db.batch([
		db.insert(processedEvents).values({ eventId, handler }).onConflictDoNothing(),
		failureOf(db, eventId, handler),
	]);
}

/** Clears the failure an idempotent handler recorded on an earlier delivery. */
async function clearFailure(db: Database, eventId: string, handler: string): Promise<void> {
	await failureOf(db, eventId, handler).run();
}

/** Counts each handler's failure and keeps its last (redacted) error, for the dead letter. */
async function recordFailures(db: Database, eventId: string, failures: Failure[]): Promise<void> {
	const now = Date.now();
	const [first, ...rest] = failures.map((f) =>
		db
			.insert(eventFailures)
			.values({ eventId, handler: f.handler, attempts: 1, lastError: f.error, updatedAt: now })
			.onConflictDoUpdate({
				target: [eventFailures.eventId, eventFailures.handler],
				set: { attempts: sql`${eventFailures.attempts} + 1`, lastError: f.error, updatedAt: now },
			}),
	);
	if (first) await db.batch([first, ...rest]);
}
