/**
 * The admission interface: what the middleware asks, what it is told, the RPC contract with the
 * RateLimiter Durable Object (durable-objects/rate-limiter.ts, which imports it from here) and the
 * accessor that names and reaches its instances.
 */
import { z } from "zod";

export const BucketPolicySchema = z.object({
	rate: z.object({ perSecond: z.number().positive(), burst: z.number().int().positive() }),
	monthlyQuota: z.number().int().positive(),
	lease: z.object({ maxTokens: z.number().int().min(1), ttlMs: z.number().int().min(50).max(10_000) }),
});
export type BucketPolicy = z.infer<typeof BucketPolicySchema>;

export const LeaseReturnSchema = z.object({ leaseId: z.string().min(1), unspent: z.number().int().min(0) });
export type LeaseReturn = z.infer<typeof LeaseReturnSchema>;

export const AcquireRequestSchema = z.object({
	policy: BucketPolicySchema,
	want: z.number().int().min(1),
	returns: z.array(LeaseReturnSchema).max(64).default([]),
});
export type AcquireRequest = z.input<typeof AcquireRequestSchema>;

/** What the object answers. `granted` may be 0: then `retryAfterMs` says when to come back. */
export interface Grant {
	leaseId: string | null;
	granted: number;
	/** How long the lease lives, measured from when the isolate sent its request. */
	ttlMs: number;
	/** Unleased tokens left in the bucket after this grant (whole tokens). */
	available: number;
	/** Quota left this month after this grant. */
	quotaRemaining: number;
	/** Milliseconds until the month ends and the quota resets. */
	quotaResetMs: number;
	/** Milliseconds until the bucket would be full again at the current rate. */
	rateResetMs: number;
	/** When nothing was granted: which limit refused, and when a token can next be had. */
	limitedBy: "rate" | "quota" | null;
	retryAfterMs: number;
}

export interface LimiterState {
	available: number;
	outstanding: number;
	quotaUsed: number;
	period: string;
	leases: number;
}

/** What a limiter limits: a tenant, an API key, or a webhook endpoint. */
export type LimiterSubject = { tenantId: string } | { keyId: string } | { webhookEndpointId: string };

/** Durable Object names: the one place limiter instances are named. */
export function rateLimiterName(subject: LimiterSubject): string {
	if ("tenantId" in subject) return `tenant:${subject.tenantId}`;
	if ("keyId" in subject) return `key:${subject.keyId}`;
	return `webhook-endpoint:${subject.webhookEndpointId}`;
}

/**
 * The RateLimiter stub for a subject, or for a name {@link rateLimiterName} made: the one way to reach a
 * limiter. A stub belongs to the request that made it: make one per call, never cache it across requests.
 */
export function rateLimiterFor(env: Pick<Env, "RATE_LIMITER">, subject: LimiterSubject | string) {
	return env.RATE_LIMITER.getByName(typeof subject === "string" ? subject : rateLimiterName(subject));
}

export interface Allowed {
	kind: "allowed";
	/** Best estimate of tokens left in the bucket (this isolate's lease plus the object's pool at the last grant). */
	rateRemaining: number;
	rateResetMs: number;
	quotaRemaining: number;
	quotaResetMs: number;
	/** Returns the token unspent (used when a second limit refuses the request). */
	refund: () => void;
}

export interface Denied {
	kind: "denied";
	limitedBy: "rate" | "quota";
	retryAfterMs: number;
	rateRemaining: number;
	rateResetMs: number;
	quotaRemaining: number;
	quotaResetMs: number;
}

export interface Unavailable {
	kind: "unavailable";
	reason: string;
}

export type Decision = Allowed | Denied | Unavailable;

/** Admits or refuses one request against the named limiter. */
export interface Admission {
	take(name: string, policy: BucketPolicy): Promise<Decision>;
}

/** Admits everything: for tests of other layers and for tiers with admission switched off. */
export const noopAdmission: Admission = {
	async take(_name, policy) {
		return {
			kind: "allowed",
			rateRemaining: policy.rate.burst,
			rateResetMs: 0,
			quotaRemaining: policy.monthlyQuota,
			quotaResetMs: 0,
			refund: () => {},
		};
	},
};
