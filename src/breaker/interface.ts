/**
 * The circuit-breaker interface: policy, breaker names and the accessor that reaches them, the RPC
 * contract with the CircuitBreaker Durable Object (durable-objects/circuit-breaker.ts, which imports it
 * from here) and what callers are told. Design notes are at the top of machine.ts.
 */
import { z } from "zod";

/**
 * When a breaker opens and how it recovers. Every field has a default, so `{}` is a valid policy;
 * {@link DEFAULT_BREAKER_POLICY} is the result.
 */
export const BreakerPolicySchema = z.object({
	/** Open after this many failures in a row (a success resets the count). */
	consecutiveFailures: z.number().int().min(1).max(10_000).default(5),
	/** Open when failures / calls over the rolling window reach this share (0 < rate ≤ 1)… */
	failureRate: z.number().gt(0).max(1).default(0.5),
	/** …provided the window holds at least this many calls. */
	minimumVolume: z.number().int().min(1).max(1_000_000).default(20),
	/** Length of the rolling window, kept as 10 buckets (so it rolls in steps of windowMs / 10). */
	windowMs: z.number().int().min(10).max(3_600_000).default(60_000),
	/** How long the breaker stays open the first time. */
	cooldownMs: z.number().int().min(1).max(3_600_000).default(30_000),
	/** Each reopening without a close in between multiplies the cooldown by this (1 = constant)… */
	cooldownMultiplier: z.number().min(1).max(10).default(2),
	/** …up to this (never below `cooldownMs`). */
	maxCooldownMs: z.number().int().min(1).max(86_400_000).default(300_000),
	/** Probes admitted at once while half-open. */
	halfOpenProbes: z.number().int().min(1).max(1000).default(1),
	/** Successful probes that close the breaker. */
	successesToClose: z.number().int().min(1).max(1000).default(1),
	/** A probe not recorded within this long frees its slot (the isolate died or forgot). */
	probeTimeoutMs: z.number().int().min(1).max(3_600_000).default(60_000),
});
/** A complete policy (defaults applied). */
export type BreakerPolicy = z.infer<typeof BreakerPolicySchema>;
/** A policy as callers may write it: fields left out take their defaults. */
export type BreakerPolicyInput = z.input<typeof BreakerPolicySchema>;

/** The policy used when a caller sets nothing. */
export const DEFAULT_BREAKER_POLICY: BreakerPolicy = Object.freeze(BreakerPolicySchema.parse({}));

export const BREAKER_STATES = ["closed", "open", "half_open"] as const;
export type BreakerStateName = (typeof BREAKER_STATES)[number];

/** Why a breaker changed state (the `reason` of a `breaker.transition` event). */
export type TransitionReason =
	| "consecutive-failures"
	| "failure-rate"
	| "cooldown-elapsed"
	| "probes-succeeded"
	| "probe-failed"
	| "reset";

const traceparent = z.string().max(256).optional();

export const AdmitRequestSchema = z.object({ policy: BreakerPolicySchema, traceparent });
export type AdmitRequest = z.input<typeof AdmitRequestSchema>;

export const RecordRequestSchema = z.object({
	policy: BreakerPolicySchema,
	success: z.boolean(),
	/** Whether the call was admitted as a half-open probe. */
	probe: z.boolean().default(false),
	/** The probe's id from the admission; without it the oldest probe slot is released. */
	probeId: z.string().max(64).optional(),
	/** How many outcomes this record stands for (successes an isolate coalesced); 1 unless `success`. */
	count: z.number().int().min(1).max(1_000_000).default(1),
	/** Frees the probe slot without counting anything: the call was never made, or says nothing of the target's health. */
	release: z.boolean().default(false),
	traceparent,
});
export type RecordRequest = z.input<typeof RecordRequestSchema>;

/** What the object answers to `admit`. */
export interface AdmitResult {
	allowed: boolean;
	state: BreakerStateName;
	/** The call was admitted as a half-open probe: record its outcome with `probe: true` and `probeId`. */
	probe: boolean;
	probeId?: string;
	/** When open: the time (object's clock) until which every call is refused. */
	openUntil?: number;
	/** When refused: how long until asking again is worthwhile. */
	retryAfterMs?: number;
}

/** A breaker's bookkeeping, for `record`, `state`, `reset`, operators and tests. */
export interface BreakerSnapshot {
	name: string;
	state: BreakerStateName;
	/** When the breaker entered its current state (0 if it never left `closed`). */
	since: number;
	/** Set while open: until when (object's clock), and how long that is from now. */
	openUntil?: number;
	retryAfterMs?: number;
	consecutiveFailures: number;
	/** Outcomes in the rolling window (closed state only; cleared on every transition). */
	window: { successes: number; failures: number };
	probesInFlight: number;
	/** Successful probes so far in this half-open spell. */
	probeSuccesses: number;
	/** Times the breaker reopened since it was last closed (drives the cooldown growth). */
	reopenings: number;
	/** Transitions so far; carried by each transition event so consumers can order them. */
	seq: number;
	/** Transition events stored but not yet accepted by the queue. */
	pendingEvents: number;
}

const TARGET = /^[\x21-\x7e]{1,160}$/;
const TENANT = /^[^:\s]{1,128}$/;

/** Who a breaker belongs to: one tenant's view of a target, or the gateway's own (its keys, its upstreams). */
export type BreakerSubject = { tenantId: string; target: string } | { gateway: true; target: string };

/**
 * Durable Object names: the one place breakers are named. `tenant:<tenantId>:<target>` or
 * `gateway:<target>`; a target is printable ASCII without spaces (it may contain `:`), ≤ 160 chars.
 */
export function breakerName(subject: BreakerSubject): string {
	if (!TARGET.test(subject.target)) throw new Error(`breakerName: invalid target ${JSON.stringify(subject.target)}`);
	if ("gateway" in subject) return `gateway:${subject.target}`;
	if (!TENANT.test(subject.tenantId)) throw new Error("breakerName: invalid tenant id");
	return `tenant:${subject.tenantId}:${subject.target}`;
}

/**
 * The CircuitBreaker stub for a subject, or for a name {@link breakerName} made: the one way to reach a
 * breaker. A stub belongs to the request that made it: make one per call, never cache it across requests.
 */
export function circuitBreakerFor(env: Pick<Env, "CIRCUIT_BREAKER">, subject: BreakerSubject | string) {
	return env.CIRCUIT_BREAKER.getByName(typeof subject === "string" ? subject : breakerName(subject));
}

/** The inverse of {@link breakerName}; `null` for a name it did not make. */
export function parseBreakerName(
	name: string,
): { scope: "tenant"; tenantId: string; target: string } | { scope: "gateway"; target: string } | null {
	if (name.startsWith("gateway:")) {
		const target = name.slice("gateway:".length);
		return TARGET.test(target) ? { scope: "gateway", target } : null;
	}
	if (name.startsWith("tenant:")) {
		const rest = name.slice("tenant:".length);
		const colon = rest.indexOf(":");
		if (colon < 1) return null;
		const tenantId = rest.slice(0, colon);
		const target = rest.slice(colon + 1);
		return TENANT.test(tenantId) && TARGET.test(target) ? { scope: "tenant", tenantId, target } : null;
	}
	return null;
}

/** What a caller is told before making a call. */
export interface BreakerDecision extends Omit<AdmitResult, "state"> {
	/** The breaker's state, or `unknown` when the object could not be reached. */
	state: BreakerStateName | "unknown";
	/**
	 * Where the answer came from: the object, the isolate's memory (an open breaker, a recent half-open
	 * refusal, a trusted closed state), or nowhere — the object could not be reached and the call is
	 * allowed anyway (`unavailable` then holds the reason).
	 */
	source: "object" | "local" | "unavailable";
	unavailable?: string;
}

/** The outcome of an admitted call. Pass the decision's `probe` and `probeId` back unchanged. */
export interface BreakerOutcome {
	success: boolean;
	probe?: boolean;
	probeId?: string;
	/** Counts nothing; only frees the probe slot (the call was not made, or its answer says nothing of health). */
	release?: boolean;
	traceparent?: string;
}

/** What the isolate knows after recording: the object's new state, or that it could not be reached. */
export interface RecordResult {
	state: BreakerStateName | "unknown";
	openUntil?: number;
	unavailable?: string;
}

/** Admits calls to a target and learns from their outcomes. */
export interface Breakers {
	admit(name: string, policy: BreakerPolicyInput, context?: { traceparent?: string }): Promise<BreakerDecision>;
	record(name: string, policy: BreakerPolicyInput, outcome: BreakerOutcome): Promise<RecordResult>;
}

/** Allows everything and learns nothing: for tests of other layers and for breakers switched off. */
export const noopBreakers: Breakers = {
	async admit() {
		return { allowed: true, state: "closed", probe: false, source: "local" };
	},
	async record() {
		return { state: "closed" };
	},
};
