/** The events consumer: validates each message, fans it out to the handlers, records what is done, retries what failed. */
import { inArray, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import type { z } from "zod";
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
 *
 * The bookkeeping is set-based, so the D1 round trips per batch do not grow with its size: one lookup of
 * what is already done (per 90 events); one D1 batch holding the effects of the set-based handlers (those
 * with `statements`) for every event at once, with their `processed_events` rows and cleared failures;
 * and, when other handlers ran or anything failed, one D1 batch recording those. A batch that fails is
 * taken apart — each event, or each message, alone — so one bad event fails only itself.
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

	/** Retries a message none of whose work was settled (the database is likely unavailable). */
	const retryUnsettled = (message: Message<unknown>, eventId: string | undefined, err: unknown): MessageOutcome => {
		const delaySeconds = retryDelaySeconds(message.attempts, policy);
		message.retry({ delaySeconds });
		log("error", "event consumer failed", {
			queue: batch.queue,
			messageId: message.id,
			attempts: message.attempts,
			delaySeconds,
			error: errorText(err),
		});
		return { messageId: message.id, eventId, outcome: "retried", ran: [], failed: [], delaySeconds };
	};

	const works: Work[] = [];
	const outcomes: Array<MessageOutcome | Promise<MessageOutcome> | Work> = parsed.map(({ message, result }) => {
		if (!result.success) return deadLetterInvalid(batch.queue, message, result.error, env, retryUnsettled);
		try {
			if (firstCopy.get(result.data.id) !== message.id) {
				message.ack();
				return { messageId: message.id, eventId: result.data.id, outcome: "duplicate", ran: [], failed: [] };
			}
			if (!done) throw new Error(`processed_events lookup failed: ${lookupError}`);
			const work = workOf(message, result.data, handlers, done.get(result.data.id));
			works.push(work);
			return work;
		} catch (err) {
			return retryUnsettled(message, result.data.id, err);
		}
	});

	// The set-based handlers for every event at once, beside the others (each event's in parallel).
	await Promise.all([
		runSetHandlers(db, env, works, timeoutMs),
		...works.map((w) => runOtherHandlers(w, env, timeoutMs)),
	]);
	await recordOutcomes(db, works);

	return Promise.all(
		outcomes.map((item) => {
			if (!isWork(item)) return item;
			try {
				return settle(item, env, policy);
			} catch (err) {
				return retryUnsettled(item.message, item.event.id, err);
			}
		}),
	);
}

/** A message that is not a valid envelope: stored as a dead letter at once and acked, never retried. */
async function deadLetterInvalid(
	queue: string,
	message: Message<unknown>,
	error: z.ZodError,
	env: Env,
	retryUnsettled: (message: Message<unknown>, eventId: undefined, err: unknown) => MessageOutcome,
): Promise<MessageOutcome> {
	try {
		await recordInvalidMessage(env, message, error);
		message.ack();
		log("warn", "invalid event dead-lettered", { queue, messageId: message.id });
		return { messageId: message.id, outcome: "dead-lettered", ran: [], failed: [] };
	} catch (err) {
		return retryUnsettled(message, undefined, err);
	}
}

interface Failure {
	handler: string;
	error: string;
}

/** One valid event of the batch (its first copy) and what became of each handler that wants it. */
interface Work {
	readonly kind: "work";
	message: Message<unknown>;
	event: EventEnvelope;
	/** Handlers that want the event and have not already succeeded with it on an earlier delivery. */
	pending: EventHandler[];
	/** Succeeded, and their record committed (the set-based ones commit effect and record together). */
	recorded: EventHandler[];
	/** Succeeded, record still to write (the other handlers: {@link recordOutcomes}). */
	unrecorded: EventHandler[];
	failures: Failure[];
}

function isWork(item: MessageOutcome | Promise<MessageOutcome> | Work): item is Work {
	return (item as Work).kind === "work";
}

function workOf(
	message: Message<unknown>,
	event: EventEnvelope,
	handlers: readonly EventHandler[],
	done: Set<string> | undefined,
): Work {
	const work: Work = { kind: "work", message, event, pending: [], recorded: [], unrecorded: [], failures: [] };
	for (const h of handlers) {
		if (done?.has(h.name)) continue;
		try {
			if (h.handles(event)) work.pending.push(h);
		} catch (err) {
			work.failures.push({ handler: h.name, error: `handles() threw: ${errorText(err)}` });
		}
	}
	return work;
}

/** A set-based handler and one event it is to handle. */
interface SetPair {
	work: Work;
	handler: EventHandler & Required<Pick<EventHandler, "statements">>;
}

function isSetBased(h: EventHandler): h is SetPair["handler"] {
	return typeof h.statements === "function";
}

/**
 * Runs the set-based handlers' effects for every event of the batch in ONE D1 batch, together with
 * their records (`processed_events`, cleared failures): effect and record commit together or not at
 * all. If that batch cannot be built or fails, each (event, handler) runs in a batch of its own, so a bad
 * event fails only itself.
 */
async function runSetHandlers(db: Database, env: Env, works: Work[], timeoutMs: number): Promise<void> {
	const pairs: SetPair[] = works.flatMap((work) =>
		work.pending.filter(isSetBased).map((handler) => ({ work, handler })),
	);
	if (pairs.length === 0) return;
	const run = async (group: SetPair[]) => {
		await orTimeout(
			runBatch(db, setStatements(db, env, group)),
			timeoutMs,
			() =>
				new Error(
					`handlers ${[...new Set(group.map((p) => p.handler.name))].join(", ")} timed out after ${timeoutMs} ms`,
				),
		);
		for (const p of group) p.work.recorded.push(p.handler);
	};
	try {
		await run(pairs);
		return;
	} catch (err) {
		if (pairs.length === 1 && pairs[0]) {
			pairs[0].work.failures.push({ handler: pairs[0].handler.name, error: errorText(err) });
			return;
		}
		log("warn", "set-based event handlers failed together; running each event alone", {
			events: pairs.length,
			error: errorText(err),
		});
	}
	await Promise.all(
		pairs.map(async (p) => {
			try {
				await run([p]);
			} catch (err) {
				p.work.failures.push({ handler: p.handler.name, error: errorText(err) });
			}
		}),
	);
}

/** The statements of `pairs`: each handler's effect over its events, then the records of their success. */
function setStatements(db: Database, env: Env, pairs: SetPair[]): BatchItem<"sqlite">[] {
	const items: BatchItem<"sqlite">[] = [];
	for (const [handler, group] of Map.groupBy(pairs, (p) => p.handler)) {
		items.push(
			...handler.statements(
				group.map((p) => p.work.event),
				env,
				db,
			),
		);
	}
	items.push(
		...records(
			db,
			pairs.map((p) => ({ eventId: p.work.event.id, handler: p.handler })),
			[],
		),
	);
	return items;
}

/** Runs the handlers without `statements`, one event's in parallel, each under the timeout. */
async function runOtherHandlers(work: Work, env: Env, timeoutMs: number): Promise<void> {
	await Promise.all(
		work.pending
			.filter((h) => !isSetBased(h))
			.map(async (h) => {
				try {
					await orTimeout(
						h.handle(work.event, env),
						timeoutMs,
						() => new Error(`handler ${h.name} timed out after ${timeoutMs} ms`),
					);
					work.unrecorded.push(h);
				} catch (err) {
					work.failures.push({ handler: h.name, error: errorText(err) });
				}
			}),
	);
}

/**
 * Records, for the whole batch in one D1 batch, the successes of the handlers without `statements` and
 * every failure. If that batch fails, each message's records are written on their own; a message whose
 * successes cannot be recorded counts those handlers as failed (their effect happened but is not
 * recorded, so they run again, which their contract allows). It waits for the slowest handler of the
 * batch, but no message is settled later for it: the queue takes the acks and retries when the
 * invocation returns, and the set-based handlers' effects never wait for it.
 */
async function recordOutcomes(db: Database, works: Work[]): Promise<void> {
	const pending = works.filter((w) => w.unrecorded.length > 0 || w.failures.length > 0);
	if (pending.length === 0) return;
	const write = (group: Work[]) =>
		runBatch(
			db,
			records(
				db,
				group.flatMap((w) => w.unrecorded.map((handler) => ({ eventId: w.event.id, handler }))),
				group.flatMap((w) => w.failures.map((f) => ({ eventId: w.event.id, ...f }))),
			),
		);
	const committed = (w: Work) => {
		w.recorded.push(...w.unrecorded);
		w.unrecorded = [];
	};
	try {
		await write(pending);
		for (const w of pending) committed(w);
		return;
	} catch (err) {
		if (pending.length > 1) {
			log("warn", "recording event outcomes failed for the batch; recording each message alone", {
				messages: pending.length,
				error: errorText(err),
			});
		}
	}
	await Promise.all(
		pending.map(async (w) => {
			try {
				await write([w]);
				committed(w);
				return;
			} catch (err) {
				for (const h of w.unrecorded) {
					w.failures.push({ handler: h.name, error: `recording success failed: ${errorText(err)}` });
				}
				w.unrecorded = [];
			}
			try {
				await runBatch(
					db,
					records(
						db,
						[],
						w.failures.map((f) => ({ eventId: w.event.id, ...f })),
					),
				);
			} catch (err) {
				log("error", "recording event failures failed", { eventId: w.event.id, error: errorText(err) });
			}
		}),
	);
}

/** Acks a message whose handlers all succeeded, else retries it after the slowest failed handler's delay. */
function settle(work: Work, env: Env, policy: RetryPolicy): MessageOutcome {
	const { message, event, failures } = work;
	const base = { messageId: message.id, eventId: event.id, ran: work.recorded.map((h) => h.name).sort() };
	if (failures.length === 0) {
		message.ack();
		return { ...base, outcome: "acked", failed: [] };
	}
	// A handler may bring its own schedule (the webhook forwarder follows Standard Webhooks'); the
	// message waits for the slowest of the failed handlers.
	const delaySeconds = Math.max(
		...failures.map((f) => {
			const own = work.pending.find((h) => h.name === f.handler)?.retryDelaySeconds?.(message.attempts, env);
			return own ?? retryDelaySeconds(message.attempts, policy);
		}),
	);
	message.retry({ delaySeconds });
	const traceId = parseTraceparent(event.traceparent)?.traceId;
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

async function runBatch(db: Database, items: BatchItem<"sqlite">[]): Promise<void> {
	const [first, ...rest] = items;
	if (first) await db.batch([first, ...rest]);
}

/** `[[a, b, …], …]` as one JSON parameter, unpacked by `json_each`: one statement for any number of rows. */
function rowsOf(rows: unknown[][]): string {
	return JSON.stringify(rows);
}

/**
 * The statements that record handlers' successes and failures, each one statement for all its rows
 * whatever their number (the rows travel as one JSON parameter, as the usage recorder's do): a success
 * of a handler not idempotent on its own gets its `processed_events` row; every success clears the
 * handler's failure of an earlier delivery (or of the replayed dead letter: a DELETE matching nothing
 * writes no row); each failure is counted and keeps its last (redacted) error, for the dead letter.
 */
function records(
	db: Database,
	successes: Array<{ eventId: string; handler: EventHandler }>,
	failures: Array<{ eventId: string; handler: string; error: string }>,
): BatchItem<"sqlite">[] {
	const items: BatchItem<"sqlite">[] = [];
	const kept = successes.filter((s) => !s.handler.idempotent).map((s) => [s.eventId, s.handler.name]);
	if (kept.length > 0) {
		// INSERT … SELECT names every column, so `processed_at` gets its default expression here. `WHERE true`
		// keeps SQLite from reading ON CONFLICT as part of the SELECT (its documented upsert rule).
		items.push(
			db
				.insert(processedEvents)
				.select(
					sql`SELECT value ->> 0, value ->> 1, ${processedEvents.processedAt.default ?? sql`null`} FROM json_each(${rowsOf(kept)}) WHERE true`,
				)
				.onConflictDoNothing(),
		);
	}
	if (successes.length > 0) {
		const cleared = successes.map((s) => [s.eventId, s.handler.name]);
		items.push(
			db
				.delete(eventFailures)
				.where(
					sql`(${eventFailures.eventId}, ${eventFailures.handler}) IN (SELECT value ->> 0, value ->> 1 FROM json_each(${rowsOf(cleared)}))`,
				),
		);
	}
	if (failures.length > 0) {
		const now = Date.now();
		const failed = failures.map((f) => [f.eventId, f.handler, f.error]);
		items.push(
			db
				.insert(eventFailures)
				.select(
					sql`SELECT value ->> 0, value ->> 1, 1, value ->> 2, ${now} FROM json_each(${rowsOf(failed)}) WHERE true`,
				)
				.onConflictDoUpdate({
					target: [eventFailures.eventId, eventFailures.handler],
					set: {
						attempts: sql`${eventFailures.attempts} + 1`,
						lastError: sql`excluded.${sql.identifier(eventFailures.lastError.name)}`,
						updatedAt: now,
					},
				}),
		);
	}
	return items;
}
