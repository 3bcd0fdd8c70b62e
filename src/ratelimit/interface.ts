/** The admission interface: what the middleware asks, and what it is told. */
import type { BucketPolicy } from "../../durable-objects/rate-limiter";

export type { BucketPolicy };

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
