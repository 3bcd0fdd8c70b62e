/** What the events consumer dispatches to. Handlers are registered in workers/gateway.ts. */
import type { BatchItem } from "drizzle-orm/batch";
import type { Database } from "../db";
import type { EventEnvelope } from "./envelope";

export interface EventHandler {
	/** Stable name: recorded with the event id in `processed_events`, so renaming one re-runs it. */
	name: string;
	/** Whether this handler wants the event. */
	handles(event: EventEnvelope): boolean;
	/**
	 * Does the handler's effect. Throw to have the event retried (with back-off) for this handler only.
	 * Must be safe to run again after a crash between its effect and the `processed_events` record.
	 * The consumer calls it only for handlers without {@link EventHandler.statements}.
	 */
	handle(event: EventEnvelope, env: Env): Promise<void>;
	/**
	 * Optional, for a handler whose whole effect is D1 writes: those writes for all of `events` (every
	 * event of a queue batch this handler has to handle), as few statements as it can (set-based, not one
	 * per event). The consumer runs them in ONE D1 batch per queue batch, together with its records of
	 * their success, so effect and record commit together or not at all; when that batch fails, or this
	 * throws, it calls this again with each event alone, so a bad event fails only itself. Must not do
	 * I/O itself; `handle` must have the same effect for one event.
	 */
	statements?(events: readonly EventEnvelope[], env: Env, db: Database): BatchItem<"sqlite">[];
	/**
	 * True when the handler's own unique key (or guard) makes running it again for the same event a
	 * no-op: the consumer then keeps no `processed_events` row for it (a row written per event saved),
	 * and a redelivered or replayed event simply runs it again.
	 */
	idempotent?: boolean;
	/**
	 * Optional: how long to wait before the next attempt after this handler failed `attempts` times
	 * (e.g. the webhook forwarder's Standard Webhooks schedule). Without it the consumer's back-off applies.
	 */
	retryDelaySeconds?(attempts: number, env: Env): number;
}
