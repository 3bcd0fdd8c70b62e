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
	/** Report the burst only (a webhook endpoint's bucket: its quota is the tenant's). */
	rateOnly?: boolean;
}

const MONTH_S = 30 * 24 * 3600;

const policyItems = new WeakMap<BucketPolicy, Map<string, string>>();

/** One policy's items, built once per policy object and prefix. */
function policyItem(prefix: string, policy: BucketPolicy, rateOnly = false): string {
	let byPrefix = policyItems.get(policy);
	if (!byPrefix) {
		byPrefix = new Map();
		policyItems.set(policy, byPrefix);
	}
	// A rate-only item differs from the full one of the same policy and prefix: its own cache entry.
	const key = rateOnly ? `${prefix}\0rate` : prefix;
	let item = byPrefix.get(key);
	if (item === undefined) {
		const window = Math.max(1, Math.ceil(policy.rate.burst / policy.rate.perSecond));
		item = `"${prefix}burst";q=${policy.rate.burst};w=${window}`;
		if (!rateOnly) item += `, "${prefix}monthly";q=${policy.monthlyQuota};w=${MONTH_S}`;
		byPrefix.set(key, item);
	}
	return item;
}

/** `"burst";q=200;w=4, "monthly";q=1000000;w=2592000` */
export function policyField(views: LimitView[]): string {
	return views.length === 1
		? policyItem(views[0]?.prefix ?? "", (views[0] as LimitView).policy, views[0]?.rateOnly)
		: views.map((v) => policyItem(v.prefix, v.policy, v.rateOnly)).join(", ");
}

/** `"burst";r=120;t=1, "monthly";r=999000;t=86400` */
export function limitField(views: LimitView[]): string {
	return views
		.flatMap((v) => [
			`"${v.prefix}burst";r=${Math.max(0, Math.floor(v.rateRemaining))};t=${Math.ceil(v.rateResetMs / 1000)}`,
			...(v.rateOnly
				? []
				: [
						`"${v.prefix}monthly";r=${Math.max(0, Math.floor(v.quotaRemaining))};t=${Math.ceil(v.quotaResetMs / 1000)}`,
					]),
		])
		.join(", ");
}
