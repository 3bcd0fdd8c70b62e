/**
 * Putting a delivery's `webhook.received` event on the queue, and what a refusal does to the row: it is
 * counted, the next try is backed off, and after {@link MAX_ENQUEUE_FAILURES} the row is parked (with an
 * audit record) instead of being retried first forever. Shared by ingest, the sweep and replay.
 */
import { and, eq, isNull, sql } from "drizzle-orm";
import { appendAudit } from "../audit";
import { database, webhookDeliveries } from "../db";
import { newEvent, publish } from "../events";
import { log } from "../http";
import { errorText } from "../lib";

/** How long the sweep leaves a freshly stored delivery to the request that stored it (and the consumer). */
export const SWEEP_AFTER_MS = 60_000;

/** Refusals of one delivery's event before it is parked. */
export const MAX_ENQUEUE_FAILURES = 8;

/** Backoff after the first refusal; it doubles with each further one (1, 2, 4 … 64 min: parked after ~2 h). */
export const ENQUEUE_BACKOFF_BASE_MS = 60_000;

/** When the sweep tries again after the `failures`-th refusal (ms after `now`). */
export function enqueueBackoffMs(failures: number): number {
	return ENQUEUE_BACKOFF_BASE_MS * 2 ** Math.max(0, Math.min(failures, MAX_ENQUEUE_FAILURES) - 1);
}

/** The event id of a delivery is fixed, so enqueueing it twice can never have two effects. */
export function deliveryEventId(deliveryRowId: string, replay = 0): string {
	return replay === 0 ? `ev_${deliveryRowId}` : `ev_${deliveryRowId}_r${replay}`;
}

/** What the event of a delivery is built from. */
export interface DeliveryRef {
	/** The `wd_…` row id. */
	id: string;
	tenantId: string;
	endpointId: string;
	eventType: string | null;
	/** The sender's delivery id. */
	deliveryId: string;
	/** Whether the endpoint has a destination to forward to. */
	forward: boolean;
}

/** Publishes the delivery's event under its fixed id (or `eventId`, for a replay); throws when the queue refuses. */
export function publishDelivery(
	env: Pick<Env, "EVENTS">,
	d: DeliveryRef,
	options: { traceparent?: string; eventId?: string; replay?: boolean } = {},
): Promise<void> {
	return publish(
		env,
		newEvent({
			id: options.eventId ?? deliveryEventId(d.id),
			type: "webhook.received",
			tenantId: d.tenantId,
			source: `webhooks/${d.endpointId}`,
			...(options.traceparent ? { traceparent: options.traceparent } : {}),
			data: {
				deliveryId: d.id,
				endpointId: d.endpointId,
				eventType: d.eventType,
				sourceDeliveryId: d.deliveryId,
				forward: d.forward,
				...(options.replay ? { replay: true } : {}),
			},
		}),
	);
}

/** A refused enqueue: the row, how many refusals it had before this one, and why. */
export interface EnqueueFailure {
	delivery: Pick<DeliveryRef, "id" | "tenantId" | "endpointId">;
	failuresBefore: number;
	error: unknown;
}

/** Only a row still waiting for its event is changed: one a consumer or a replay has moved on is left alone. */
function waiting(id: string) {
	return and(
		eq(webhookDeliveries.id, id),
		eq(webhookDeliveries.status, "received"),
		isNull(webhookDeliveries.enqueuedAt),
	);
}

/**
 * Records refusals: each row's count goes up and its next try is backed off; a row reaching
 * {@link MAX_ENQUEUE_FAILURES} is parked and gets a `webhook_delivery.parked` audit record — only a row
 * this call actually parked. Resolves to the ids parked.
 */
export async function recordEnqueueFailures(
	env: Pick<Env, "DB">,
	failures: EnqueueFailure[],
	now: number,
	requestId: string | null = null,
): Promise<string[]> {
	if (failures.length === 0) return [];
	const rows = failures.map((f) => ({ ...f, failures: f.failuresBefore + 1, text: errorText(f.error) }));
	const backedOff = rows.filter((r) => r.failures < MAX_ENQUEUE_FAILURES);
	const parked = rows.filter((r) => r.failures >= MAX_ENQUEUE_FAILURES);
	const db = database(env.DB);
	const [first, ...rest] = backedOff.map((r) =>
		db
			.update(webhookDeliveries)
			.set({
				enqueueFailures: sql`${webhookDeliveries.enqueueFailures} + 1`,
				nextEnqueueAt: now + enqueueBackoffMs(r.failures),
				lastError: `could not be queued: ${r.text}`,
				updatedAt: now,
			})
			.where(waiting(r.delivery.id)),
	);
	if (first) await db.batch([first, ...rest]);
	if (parked.length === 0) return [];
	// Parked first, and audited only where the update matched: a row the consumer has moved on, or one a
	// concurrent refusal parked first, gets no (second) record. A crash between the two leaves a parked
	// row without its record; it is still listed by status and in its lastError.
	const [firstPark, ...restPark] = parked.map((r) =>
		db
			.update(webhookDeliveries)
			.set({
				status: "parked",
				enqueueFailures: sql`${webhookDeliveries.enqueueFailures} + 1`,
				lastError: `parked after ${r.failures} failed attempts to queue it: ${r.text}`,
				updatedAt: now,
			})
			.where(waiting(r.delivery.id))
			.returning({ id: webhookDeliveries.id }),
	);
	const matched = firstPark ? await db.batch([firstPark, ...restPark]) : [];
	const parkedIds = new Set(matched.flat().map((row) => row.id));
	const done = parked.filter((r) => parkedIds.has(r.delivery.id));
	if (done.length === 0) return [];
	await appendAudit(
		env.DB,
		done.map((r) => ({
			tenantId: r.delivery.tenantId,
			actor: "system",
			action: "webhook_delivery.parked",
			target: `webhook_delivery:${r.delivery.id}`,
			requestId,
			metadata: { endpointId: r.delivery.endpointId, enqueueFailures: r.failures, lastError: r.text },
		})),
	);
	log("error", "webhook deliveries parked: their events could not be queued", {
		count: done.length,
		deliveryIds: done.map((r) => r.delivery.id).join(","),
	});
	return done.map((r) => r.delivery.id);
}
