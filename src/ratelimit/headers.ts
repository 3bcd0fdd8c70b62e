/** IETF draft-ietf-httpapi-ratelimit-headers-11 `RateLimit-Policy` and `RateLimit` fields. */
import type { BucketPolicy } from "./interface";

export interface LimitView {
	/** Policy name prefix: `""` for the tenant, `"key-"` for a per-key limit. */
	prefix: string;
	policy: BucketPolicy;
	rateRemaining: number;
	rateResetMs: number;
	quotaRemaining: number;
	quotaResetMs: number;
}

const MONTH_S = 30 * 24 * 3600;

/** `"burst";q=200;w=4, "monthly";q=1000000;w=2592000` */
export function policyField(views: LimitView[]): string {
	return views
		.flatMap((v) => [
			`"${v.prefix}burst";q=${v.policy.rate.burst};w=${Math.max(1, Math.ceil(v.policy.rate.burst / v.policy.rate.perSecond))}`,
			`"${v.prefix}monthly";q=${v.policy.monthlyQuota};w=${MONTH_S}`,
		])
		.join(", ");
}

/** `"burst";r=120;t=1, "monthly";r=999000;t=86400` */
export function limitField(views: LimitView[]): string {
	return views
		.flatMap((v) => [
			`"${v.prefix}burst";r=${Math.max(0, Math.floor(v.rateRemaining))};t=${Math.ceil(v.rateResetMs / 1000)}`,
			`"${v.prefix}monthly";r=${Math.max(0, Math.floor(v.quotaRemaining))};t=${Math.ceil(v.quotaResetMs / 1000)}`,
		])
		.join(", ");
}
