/** `admit()`: strict admission for every protected request — the tenant's bucket and quota, and the key's where configured. */
import type { MiddlewareHandler } from "hono";
import type { AuthVariables, Principal } from "../auth";
import { type Limits, type TierPolicy, tierPolicy } from "../config";
import { ApiError, log } from "../http";
import { type LimitView, limitField, policyField } from "./headers";
import { type Admission, type Allowed, type BucketPolicy, rateLimiterName } from "./interface";
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

const clients = new WeakMap<object, LeaseClient>();

/** The isolate's lease client over the RATE_LIMITER namespace. */
export function leaseClientFor(env: Env): LeaseClient {
	let client = clients.get(env.RATE_LIMITER);
	if (!client) {
		const ns = env.RATE_LIMITER;
		client = new LeaseClient({ stub: (name) => ns.getByName(name) });
		clients.set(env.RATE_LIMITER, client);
	}
	return client;
}

export interface AdmitOptions {
	/** Defaults to the isolate's lease client over `env.RATE_LIMITER`. */
	admission?: (env: Env) => Admission;
}

interface Subject {
	name: string;
	prefix: string;
	policy: BucketPolicy;
}

function subjects(p: Principal, tier: TierPolicy): Subject[] {
	const list: Subject[] = [];
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

/**
 * Admits the request or throws 429 (`rate-limited` / `quota-exceeded`, with Retry-After) or, when the
 * limiter cannot be reached and the tier says to fail closed, 503. Sets RateLimit headers either way.
 */
export function admit(options: AdmitOptions = {}): MiddlewareHandler<{ Bindings: Env; Variables: AuthVariables }> {
	const admissionFor = options.admission ?? leaseClientFor;
	return async function admit(c, next) {
		const principal = c.var.principal;
		const tier = tierPolicy(principal.tier);
		const admission = admissionFor(c.env);
		const views: LimitView[] = [];
		const taken: Allowed[] = [];
		for (const subject of subjects(principal, tier)) {
			const decision = await admission.take(subject.name, subject.policy);
			if (decision.kind === "unavailable") {
				const closed = tier.limiterUnavailable.quota === "closed" || tier.limiterUnavailable.rate === "closed";
				log(closed ? "error" : "warn", "rate limiter unavailable", {
					limiter: subject.name,
					failMode: closed ? "closed" : "open",
					reason: decision.reason,
					requestId: c.var.requestId,
					tenantId: principal.tenantId,
				});
				if (closed) {
					for (const t of taken) t.refund();
					throw new ApiError("limiter-unavailable", "Admission control is unavailable; try again shortly.", {
						headers: { "retry-after": "1" },
					});
				}
				continue;
			}
			const view: LimitView = { prefix: subject.prefix, policy: subject.policy, ...decision };
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
		if (views.length > 0) {
			c.header("ratelimit-policy", policyField(views));
			c.header("ratelimit", limitField(views));
		}
		await next();
	};
}
