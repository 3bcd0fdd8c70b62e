/** The one event envelope every plane publishes: typed, versioned, validated with zod at both ends. */
import { z } from "zod";
import { randomHex } from "../lib";

export const EVENT_VERSION = 1;

export const EventEnvelopeSchema = z.object({
	/** Unique per event; handlers record (id, handler) so an event has its effect once. */
	id: z.string().min(1).max(128),
	/** Dotted type, e.g. `webhook.received`, `audit.record`, `breaker.transition`. */
	type: z.string().regex(/^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/),
	version: z.literal(EVENT_VERSION),
	tenantId: z.string().min(1).max(128),
	/** ISO 8601 time the event happened. */
	time: z.iso.datetime(),
	/** What produced it: `gateway`, `webhooks/<endpointId>`, `breaker/<name>`, … */
	source: z.string().min(1).max(256),
	/** W3C traceparent of the request that caused it, when there was one. */
	traceparent: z.string().optional(),
	data: z.record(z.string(), z.unknown()),
});

export type EventEnvelope = z.infer<typeof EventEnvelopeSchema>;

/** Builds an envelope with a fresh id and the current time. */
export function newEvent(
	fields: Pick<EventEnvelope, "type" | "tenantId" | "source" | "data"> &
		Partial<Pick<EventEnvelope, "id" | "traceparent">>,
): EventEnvelope {
	return {
		id: fields.id ?? `ev_${randomHex(16)}`,
		type: fields.type,
		version: EVENT_VERSION,
		tenantId: fields.tenantId,
		time: new Date().toISOString(),
		source: fields.source,
		...(fields.traceparent ? { traceparent: fields.traceparent } : {}),
		data: fields.data,
	};
}
