/** The `breaker.transition` event a CircuitBreaker object writes to its outbox for each change of state. */
import { type EventEnvelope, EventEnvelopeSchema, newEvent } from "../events";
import { parseBreakerName } from "./interface";
import type { Transition } from "./machine";

/**
 * The event for transition `t` of breaker `name`: in its tenant's stream for a tenant's breaker, in the
 * operator's for the gateway's own; null if it does not validate (nothing invalid is ever queued).
 */
export function transitionEvent(name: string, t: Transition, operatorTenant: string): EventEnvelope | null {
	const parsed = parseBreakerName(name);
	const event = EventEnvelopeSchema.safeParse(
		newEvent({
			type: "breaker.transition",
			tenantId: parsed?.scope === "tenant" ? parsed.tenantId : operatorTenant,
			source: `breaker/${name}`,
			...(t.traceparent ? { traceparent: t.traceparent } : {}),
			data: {
				name,
				target: parsed?.target ?? null,
				from: t.from,
				to: t.to,
				reason: t.reason,
				seq: t.seq,
				at: new Date(t.at).toISOString(),
				failures: t.failures,
				volume: t.volume,
				consecutiveFailures: t.consecutiveFailures,
				probeSuccesses: t.probeSuccesses,
				...(t.openUntil !== undefined ? { openUntil: new Date(t.openUntil).toISOString() } : {}),
				...(t.cooldownMs !== undefined ? { cooldownMs: t.cooldownMs } : {}),
			},
		}),
	);
	return event.success ? event.data : null;
}
