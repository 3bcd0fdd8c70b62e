/** The events handler that writes audit records: once per event, chained in the order events arrive. */
import { z } from "zod";
import type { EventEnvelope, EventHandler } from "../events";
import { type AuditEntry, appendAuditOnce } from "./store";

/** `audit.record`: a record asked for by a plane (signature failures, content blocks, …). */
const AuditRecordDataSchema = z.object({
	actor: z.string().min(1).max(256),
	action: z.string().min(1).max(128),
	target: z.string().max(512).nullish(),
	requestId: z.string().max(128).nullish(),
	metadata: z.record(z.string(), z.unknown()).nullish(),
});

/** `breaker.transition`: a circuit breaker changed state; the rest of its data is kept as metadata. */
const BreakerTransitionDataSchema = z.looseObject({
	name: z.string().min(1).max(512),
	from: z.string(),
	to: z.string(),
	reason: z.string(),
});

function entryOf(event: EventEnvelope): AuditEntry {
	// The time the event happened, not the time it reached us: a redelivery writes the same record.
	const base = { tenantId: event.tenantId, createdAt: Date.parse(event.time) };
	if (event.type === "breaker.transition") {
		const data = BreakerTransitionDataSchema.parse(event.data);
		return { ...base, actor: "system", action: "breaker.transition", target: `breaker:${data.name}`, metadata: data };
	}
	const data = AuditRecordDataSchema.parse(event.data);
	return {
		...base,
		actor: data.actor,
		action: data.action,
		target: data.target ?? null,
		requestId: data.requestId ?? null,
		metadata: data.metadata ?? null,
	};
}

/**
 * Writes `audit.record` and `breaker.transition` events to the tenant's chain with the event's id:
 * a redelivered or replayed event writes nothing the second time (UNIQUE(event_id)), and events that
 * arrive out of order are chained in arrival order, never forking or skipping a seq. Data that does
 * not match its type's schema throws, so the event ends in the dead-letter queue.
 */
export const auditWriter: EventHandler = {
	name: "audit-writer",
	idempotent: true,
	handles: (event) => event.type === "audit.record" || event.type === "breaker.transition",
	async handle(event, env) {
		await appendAuditOnce(env.DB, entryOf(event), event.id);
	},
};
