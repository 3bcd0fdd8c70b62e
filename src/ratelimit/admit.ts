/**
 * `admit()`: strict admission for every protected request — the tenant's bucket and quota, and the key's
 * where configured — and `takeAdmission()`, the same all-or-none take for webhook ingest (`webhookSubjects`).
 */
import type { MiddlewareHandler } from "hono";
import { type Limits, type TierPolicy, tierPolicy } from "../config";
import { ApiError, type AppEnv, log, type Principal } from "../http";
import { perIsolate } from "../lib";
import { type LimitView, limitField, policyField } from "./headers";
import { type Admission, type Allowed, type BucketPolicy, rateLimiterFor, rateLimiterName } from "./interface";
import { LeaseClient } from "./lease-client";

const policies = new WeakMap<TierPolicy, WeakMap<Limits | typeof NO_LIMITS, BucketPolicy>>();
const NO_LIMITS = {};

/**
 * The bucket policy for a tier with operator overrides applied. Memoised on the (cached) tier and
 * limits objects, so the hot path builds nothing and header strings can be cached per policy.
 */
export function bucketPolicy(tier: TierPolicy, limits: Limits | null): BucketPolicy {
	let byLimits = policies.get(tier);
	if (!byLimits) {
		byLimits = new WeakMap();
		policies.set(tier, byLimits);
	}
	const key = limits ?? NO_LIMITS;
	let policy = byLimits.get(key);
	if (!policy) {
		policy = {
			rate: limits?.rate ?? tier.rate,
			monthlyQuota: limits?.monthlyQuota ?? tier.monthlyQuota,
			lease: tier.lease,
		};
		byLimits.set(key, policy);
	}
	return policy;
}

const leaseClients = perIsolate((RATE_LIMITER: Env["RATE_LIMITER"]) => {
	const env = { RATE_LIMITER };
	return new LeaseClient({ stub: (name) => rateLimiterFor(env, name) });
});

/** The isolate's lease client over the RATE_LIMITER namespace. */
export function leaseClientFor(env: Pick<Env, "RATE_LIMITER">): LeaseClient {
	return leaseClients(env.RATE_LIMITER);
}

export interface AdmitOptions {
	/** Defaults to the isolate's lease client over `env.RATE_LIMITER`. */
	admission?: (env: Env) => Admission;
}

/** One limiter a request takes a token from: its instance name, its header prefix and its policy. */
export interface AdmissionSubject {
	name: string;
	/** Prefix of its RateLimit policy names (`""` tenant, `"key-"`, `"endpoint-"`). */
	prefix: string;
	policy: BucketPolicy;
	/** Only the rate of this limiter is reported (its quota is the tenant's, counted elsewhere). */
	rateOnly?: boolean;
}

function subjects(p: Principal, tier: TierPolicy): AdmissionSubject[] {
	const list: AdmissionSubject[] = [];
	if (p.keyId && p.keyLimits) {
		list.push({ name: rateLimiterName({ keyId: p.keyId }), prefix: "key-", policy: bucketPolicy(tier, p.keyLimits) });
	}
	list.push({
		name: rateLimiterName({ tenantId: p.tenantId }),
		prefix: "",
		policy: bucketPolicy(tier, p.tenantLimits),
	});
	return list;
}

/** The endpoint's bucket limits rate only: its counter's quota is set out of reach, the tenant's bucket holds the quota. */
const ENDPOINT_QUOTA = Number.MAX_SAFE_INTEGER;

const endpointPolicies = new WeakMap<object, BucketPolicy>();

/**
 * What one webhook delivery takes: a token from the endpoint's own bucket (`webhooks.perEndpoint` of
 * the tier, or the tenant's override), then one from the tenant's bucket — the same bucket and monthly
 * quota as the tenant's API traffic, so deliveries count in the quota.
 */
export function webhookSubjects(endpoint: {
	id: string;
	tenantId: string;
	tier: TierPolicy;
	tenantLimits: Limits | null;
}): AdmissionSubject[] {
	const rate = endpoint.tenantLimits?.webhooks?.perEndpoint ?? endpoint.tier.webhooks.perEndpoint;
	let endpointPolicy = endpointPolicies.get(rate);
	if (!endpointPolicy) {
		endpointPolicy = { rate, monthlyQuota: ENDPOINT_QUOTA, lease: endpoint.tier.lease };
		endpointPolicies.set(rate, endpointPolicy);
	}
	return [
		{
			name: rateLimiterName({ webhookEndpointId: endpoint.id }),
			prefix: "endpoint-",
			policy: endpointPolicy,
			rateOnly: true,
		},
		{
			name: rateLimiterName({ tenantId: endpoint.tenantId }),
			prefix: "",
			policy: bucketPolicy(endpoint.tier, endpoint.tenantLimits),
		},
	];
}

/** The RateLimit header fields of an admitted request (null when no limiter answered). */
export interface AdmissionHeaders {
	"ratelimit-policy": string;
	ratelimit: string;
}

/** What an admission took: its headers, and the tokens (each can be handed back with `refund()`). */
export interface Admitted {
	headers: AdmissionHeaders | null;
	taken: Allowed[];
}

/**
 * Takes one token from every subject, in order, or none: a refusal hands back the tokens already
 * taken and throws 429 (`rate-limited` / `quota-exceeded`, with Retry-After) or, when a limiter cannot
 * be reached and the tier says to fail closed, 503. Resolves to the RateLimit headers to send and the
 * tokens taken, so a caller whose work then did not happen can hand them back.
 */
export async function takeAdmission(
	admission: Admission,
	list: AdmissionSubject[],
	tier: TierPolicy,
	context: { requestId?: string; tenantId: string },
): Promise<Admitted> {
	const views: LimitView[] = [];
	const taken: Allowed[] = [];
	for (const subject of list) {
		const decision = await admission.take(subject.name, subject.policy);
		if (decision.kind === "unavailable") {
			const closed = tier.limiterUnavailable.quota === "closed" || tier.limiterUnavailable.rate === "closed";
			log(closed ? "error" : "warn", "rate limiter unavailable", {
				limiter: subject.name,
				failMode: closed ? "closed" : "open",
				reason: decision.reason,
				requestId: context.requestId,
				tenantId: context.tenantId,
			});
			if (closed) {
				for (const t of taken) t.refund();
				throw new ApiError("limiter-unavailable", "Admission control is unavailable; try again shortly.", {
					headers: { "retry-after": "1" },
				});
			}
			continue;
		}
		const view: LimitView = {
			prefix: subject.prefix,
			policy: subject.policy,
			...(subject.rateOnly ? { rateOnly: true } : {}),
			...decision,
		};
		views.push(view);
		if (decision.kind === "denied") {
			for (const t of taken) t.refund();
			const retryAfterS = Math.max(1, Math.ceil(decision.retryAfterMs / 1000));
			const quota = decision.limitedBy === "quota";
			throw new ApiError(
				quota ? "quota-exceeded" : "rate-limited",
				quota ? "The monthly quota is used up." : "Too many requests; slow down.",
				{
					headers: {
						"retry-after": String(retryAfterS),
						"ratelimit-policy": policyField(views),
						ratelimit: limitField(views),
					},
				},
			);
		}
		taken.push(decision);
	}
	return {
		headers: views.length > 0 ? { "ratelimit-policy": policyField(views), ratelimit: limitField(views) } : null,
		taken,
	};
}

/**
 * Admits the request or throws 429 (`rate-limited` / `quota-exceeded`, with Retry-After) or, when the
 * limiter cannot be reached and the tier says to fail closed, 503. Sets RateLimit headers either way.
 */
export function admit(options: AdmitOptions = {}): MiddlewareHandler<AppEnv> {
	const admissionFor = options.admission ?? leaseClientFor;
	return async function admit(c, next) {
		const principal = c.var.principal;
		const tier = tierPolicy(principal.tier);
		const { headers } = await takeAdmission(admissionFor(c.env), subjects(principal, tier), tier, {
			requestId: c.var.requestId,
			tenantId: principal.tenantId,
		});
		if (headers) {
			c.header("ratelimit-policy", headers["ratelimit-policy"]);
			c.header("ratelimit", headers.ratelimit);
		}
		await next();
	};
}
