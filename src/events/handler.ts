/** What the events consumer dispatches to. Handlers are registered in workers/gateway.ts. */
import type { EventEnvelope } from "./envelope";

export interface EventHandler {
	/** Stable name: recorded with the event id in `processed_events`, so renaming one re-runs it. */
	name: string;
	/** Whether this handler wants the event. */
	handles(event: EventEnvelope): boolean;
	/**
	 * Does the handler's effect. Throw to have the event retried (with back-off) for this handler only.
	 * Must be safe to run again after a crash between its effect and the `processed_events` record.
	 */
	handle(event: EventEnvelope, env: Env): Promise<void>;
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
