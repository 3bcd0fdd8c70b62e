/**
 * What happens to a delivery after it is acknowledged: the status updater, the forwarder (Standard
 * Webhooks signing, timeout, retries on the Standard Webhooks schedule, a circuit breaker per
 * tenant × destination), and the sweep that re-enqueues deliveries whose event never reached the queue
 * (fair across tenants, backed off, parking what the queue keeps refusing).
 */
import { and, eq, inArray, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { type Breakers, breakerName, DEFAULT_BREAKER_POLICY } from "../breaker";
import { config } from "../config";
import { type Database, database, webhookDeliveries, webhookEndpoints } from "../db";
import type { EventEnvelope, EventHandler } from "../events";
import { checkOutboundUrl, guardedFetch, log, OutboundUrlError } from "../http";
import { errorText, fromBase64 } from "../lib";
import { unseal } from "../storage";
import { encryptionKey } from "./endpoints";
import { type EnqueueFailure, publishDelivery, recordEnqueueFailures } from "./enqueue";
import { signStandardWebhook } from "./signatures";

/** D1 refuses a statement with more than 100 bound parameters. */
const MAX_IDS_PER_STATEMENT = 90;

/**
 * Standard Webhooks' retry schedule (seconds after the previous attempt): 5 s, 5 min, 30 min, 2 h,
 * 5 h, 10 h, 10 h. `scale` shrinks it (tests use 0).
 */
export const STANDARD_WEBHOOKS_SCHEDULE_S = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/** Queues delay a retry by at most 12 hours. */
const MAX_QUEUE_DELAY_S = 12 * 3600;

/** Seconds to wait after the `attempts`-th failed forward. */
export function forwardRetryDelay(attempts: number, scale = 1): number {
	const step =
		STANDARD_WEBHOOKS_SCHEDULE_S[Math.min(Math.max(attempts - 1, 0), STANDARD_WEBHOOKS_SCHEDULE_S.length - 1)] ?? 5;
	return Math.min(MAX_QUEUE_DELAY_S, Math.round(step * scale));
}

interface DeliveryEventData {
	deliveryId: string;
	endpointId: string;
	forward?: boolean;
}

function dataOf(event: EventEnvelope): DeliveryEventData {
	const d = event.data as Partial<DeliveryEventData>;
	if (typeof d.deliveryId !== "string" || typeof d.endpointId !== "string") {
		throw new Error(`event ${event.id} has no delivery`);
	}
	return { deliveryId: d.deliveryId, endpointId: d.endpointId, forward: d.forward === true };
}

/**
 * Marks each delivery's event consumed (`enqueued_at`, which the sweep reads) and, for an endpoint
 * without a destination, the delivery `processed` (forwarded deliveries are the forwarder's). Set-based:
 * one UPDATE for all the batch's deliveries of each kind, run by the consumer in its one D1 batch with
 * the `processed_events` rows.
 */
function deliveryStatusStatements(events: readonly EventEnvelope[], db: Database): BatchItem<"sqlite">[] {
	const now = Date.now();
	const byKind = Map.groupBy(events, (event) => dataOf(event).forward === true);
	const items: BatchItem<"sqlite">[] = [];
	for (const [forward, group] of byKind) {
		const keys = JSON.stringify(group.map((event) => [dataOf(event).deliveryId, event.tenantId]));
		items.push(
			db
				.update(webhookDeliveries)
				.set({
					enqueuedAt: sql`coalesce(${webhookDeliveries.enqueuedAt}, ${now})`,
					...(forward ? {} : { status: "processed" as const }),
					updatedAt: now,
				})
				// Each delivery of its own event's tenant only.
				.where(
					sql`(${webhookDeliveries.id}, ${webhookDeliveries.tenantId}) IN (SELECT value ->> 0, value ->> 1 FROM json_each(${keys}))`,
				),
		);
	}
	return items;
}

/** Marks a delivery processed once its event has been consumed (forwarded deliveries are the forwarder's). */
export const deliveryStatusUpdater: EventHandler = {
	name: "webhook-delivery-status",
	handles: (event) => event.type === "webhook.received",
	statements: (events, _env, db) => deliveryStatusStatements(events, db),
	async handle(event, env) {
		const db = database(env.DB);
		const [first, ...rest] = deliveryStatusStatements([event], db);
		if (first) await db.batch([first, ...rest]);
	},
};

export interface ForwarderOptions {
	breakers: (env: Env) => Breakers;
	timeoutMs?: number;
	/** Multiplies the retry schedule (1 in production), read from the environment. */
	retryScale?: (env: Env) => number;
}

/** POSTs the verified payload to the endpoint's destination, signed with Standard Webhooks. */
export function forwarder(options: ForwarderOptions): EventHandler {
	const timeoutMs = options.timeoutMs ?? 10_000;
	return {
		name: "webhook-forwarder",
		handles: (event) => event.type === "webhook.received" && (event.data as { forward?: unknown }).forward === true,
		retryDelaySeconds: (attempts, env) => forwardRetryDelay(attempts, options.retryScale?.(env) ?? 1),
		async handle(event, env) {
			const { deliveryId, endpointId } = dataOf(event);
			const db = database(env.DB);
			const endpoint = await db
				.select()
				.from(webhookEndpoints)
				.where(and(eq(webhookEndpoints.id, endpointId), eq(webhookEndpoints.tenantId, event.tenantId)))
				.get();
			if (!endpoint?.destinationUrl || !endpoint.destinationSecret) {
				// The destination was removed after the delivery arrived: nothing to forward any more.
				await db
					.update(webhookDeliveries)
					.set({ status: "processed", lastError: "destination removed before forwarding", updatedAt: Date.now() })
					.where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.tenantId, event.tenantId)))
					.run();
				return;
			}
			const delivery = await db
				.select()
				.from(webhookDeliveries)
				.where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.tenantId, event.tenantId)))
				.get();
			if (!delivery) throw new Error(`delivery ${deliveryId} not found`);

			/** Marks the delivery failed (counting an attempt when one was made). */
			const markFailed = (error: string, attempted: boolean) =>
				db
					.update(webhookDeliveries)
					.set({
						status: "failed",
						...(attempted ? { attempts: sql`${webhookDeliveries.attempts} + 1` } : {}),
						lastError: error.slice(0, 500),
						updatedAt: Date.now(),
					})
					.where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.tenantId, event.tenantId)))
					.run();
			/** A target the outbound guard refuses is the destination's configuration: recorded, not retried. */
			const refuse = async (refused: string, attempted: boolean) => {
				log("warn", "webhook forward refused", { deliveryId, endpointId, tenantId: event.tenantId, error: refused });
				await markFailed(refused, attempted);
			};
			/** A failed attempt: recorded, then thrown so the consumer retries it on the schedule. */
			const fail = async (error: string): Promise<never> => {
				await markFailed(error, true);
				throw new Error(error);
			};

			// Checked again here: the setting may have changed since the endpoint was saved. Not retried.
			const allowPrivate = config(env).ALLOW_PRIVATE_OUTBOUND;
			const destination = checkOutboundUrl(endpoint.destinationUrl, { allowPrivate });
			if (!destination.ok) return refuse(`destination refused: the URL ${destination.message}`, false);
			const target = destination.url.origin;
			const name = breakerName({ tenantId: event.tenantId, target });
			const breakers = options.breakers(env);
			const trace: { traceparent?: string } = event.traceparent ? { traceparent: event.traceparent } : {};
			const admitted = await breakers.admit(name, DEFAULT_BREAKER_POLICY, trace);
			if (!admitted.allowed) return fail(`circuit open for ${target}`);

			// From here every path records an outcome (or releases the probe), so a probe slot is never left taken.
			let error = "";
			let refused = "";
			let status = 0;
			try {
				let body: Uint8Array;
				if (delivery.payloadKey) {
					const object = await env.FILES.get(delivery.payloadKey);
					if (!object) throw new Error(`payload ${delivery.payloadKey} missing from R2`);
					body = new Uint8Array(await object.arrayBuffer());
				} else {
					const stored = fromBase64(delivery.payload ?? "");
					if (!stored) throw new Error("stored payload is not base64");
					body = stored;
				}
				const [secret] = JSON.parse(
					await unseal(encryptionKey(env), event.tenantId, endpoint.destinationSecret),
				) as string[];
				const timestamp = Math.floor(Date.now() / 1000);
				const signature = await signStandardWebhook({ id: event.id, timestamp, body, secret: secret ?? "" });
				try {
					// Redirects are followed by hand, each target checked like the destination itself.
					const res = await guardedFetch(
						destination.url,
						{
							method: "POST",
							headers: {
								"content-type": delivery.contentType ?? "application/octet-stream",
								"webhook-id": event.id,
								"webhook-timestamp": String(timestamp),
								"webhook-signature": signature,
								...(event.traceparent ? { traceparent: event.traceparent } : {}),
							},
							body,
							signal: AbortSignal.timeout(timeoutMs),
						},
						{ allowPrivate },
					);
					status = res.status;
					await res.body?.cancel();
					if (!res.ok) error = `destination answered ${res.status}`;
				} catch (err) {
					if (err instanceof OutboundUrlError) refused = `destination refused: ${err.message}`;
					else
						error =
							err instanceof Error && err.name === "TimeoutError"
								? `timed out after ${timeoutMs} ms`
								: "connection failed";
				}
			} catch (err) {
				error = errorText(err);
			}
			if (refused) {
				// A redirect to a refused target is the destination's configuration, like a refused
				// destination: recorded as failed, not retried, and no breaker failure (a probe is released).
				if (admitted.probe) {
					await breakers.record(name, DEFAULT_BREAKER_POLICY, {
						success: false,
						release: true,
						probe: true,
						...(admitted.probeId ? { probeId: admitted.probeId } : {}),
						...trace,
					});
				}
				return refuse(refused, true);
			}
			await breakers.record(name, DEFAULT_BREAKER_POLICY, {
				success: !error,
				probe: admitted.probe,
				...(admitted.probeId ? { probeId: admitted.probeId } : {}),
				...trace,
			});
			if (error) {
				log("warn", "webhook forward failed", { deliveryId, endpointId, tenantId: event.tenantId, status, error });
				return fail(error);
			}
			await db
				.update(webhookDeliveries)
				.set({
					status: "forwarded",
					attempts: sql`${webhookDeliveries.attempts} + 1`,
					lastError: null,
					updatedAt: Date.now(),
				})
				.where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.tenantId, event.tenantId)))
				.run();
		},
	};
}

/** Most deliveries one sweep tries to enqueue. */
export const SWEEP_BATCH = 100;

/** What one sweep did. */
export interface SweepResult {
	requeued: number;
	/** Refused by the queue and backed off. */
	failed: number;
	/** Refused for the last time and parked. */
	parked: number;
}

/**
 * Re-enqueues deliveries that were stored but whose event never made it onto the queue (the request
 * failed between the two, or the queue refused it), under the same event id, so nothing can happen
 * twice. Fair: the due rows are taken round-robin over tenants and, within a tenant, over its
 * endpoints, so one tenant's stuck rows never hold back another's. A refusal is counted and backed
 * off (`enqueueBackoffMs`); the `MAX_ENQUEUE_FAILURES`th parks the row with an audit record.
 */
export async function sweepWebhookDeliveries(env: Env, now = Date.now()): Promise<SweepResult> {
	const db = database(env.DB);
	// The literal predicate matches the partial index webhook_deliveries_due_idx.
	const due = sql`${webhookDeliveries.status} = 'received' and ${webhookDeliveries.enqueuedAt} is null and ${webhookDeliveries.nextEnqueueAt} <= ${now}`;
	const byEndpoint = db
		.select({
			id: webhookDeliveries.id,
			tenantId: webhookDeliveries.tenantId,
			nextEnqueueAt: webhookDeliveries.nextEnqueueAt,
			inEndpoint:
				sql<number>`row_number() over (partition by ${webhookDeliveries.endpointId} order by ${webhookDeliveries.nextEnqueueAt}, ${webhookDeliveries.id})`.as(
					"in_endpoint",
				),
		})
		.from(webhookDeliveries)
		.where(due)
		.as("by_endpoint");
	const byTenant = db
		.select({
			id: byEndpoint.id,
			nextEnqueueAt: byEndpoint.nextEnqueueAt,
			inTenant:
				sql<number>`row_number() over (partition by ${byEndpoint.tenantId} order by ${byEndpoint.inEndpoint}, ${byEndpoint.nextEnqueueAt})`.as(
					"in_tenant",
				),
		})
		.from(byEndpoint)
		.as("by_tenant");
	const picked = await db
		.select({
			id: webhookDeliveries.id,
			tenantId: webhookDeliveries.tenantId,
			endpointId: webhookDeliveries.endpointId,
			eventType: webhookDeliveries.eventType,
			deliveryId: webhookDeliveries.deliveryId,
			enqueueFailures: webhookDeliveries.enqueueFailures,
			destinationUrl: webhookEndpoints.destinationUrl,
		})
		.from(byTenant)
		.innerJoin(webhookDeliveries, eq(webhookDeliveries.id, byTenant.id))
		.innerJoin(webhookEndpoints, eq(webhookEndpoints.id, webhookDeliveries.endpointId))
		.orderBy(sql`${byTenant.inTenant}`, byTenant.nextEnqueueAt)
		.limit(SWEEP_BATCH)
		.all();

	const sent: string[] = [];
	const failures: EnqueueFailure[] = [];
	// One at a time: a row whose event cannot be sent must not hold back the others.
	for (const d of picked) {
		const delivery = { ...d, forward: d.destinationUrl !== null };
		try {
			await publishDelivery(env, delivery);
			sent.push(d.id);
		} catch (error) {
			failures.push({ delivery, failuresBefore: d.enqueueFailures, error });
		}
	}
	for (let i = 0; i < sent.length; i += MAX_IDS_PER_STATEMENT) {
		await db
			.update(webhookDeliveries)
			.set({ enqueuedAt: now })
			.where(inArray(webhookDeliveries.id, sent.slice(i, i + MAX_IDS_PER_STATEMENT)))
			.run();
	}
	const parked = (await recordEnqueueFailures(env, failures, now)).length;
	const result = { requeued: sent.length, failed: failures.length - parked, parked };
	if (picked.length > 0) log(failures.length > 0 ? "error" : "warn", "webhook delivery sweep", { ...result });
	return result;
}
