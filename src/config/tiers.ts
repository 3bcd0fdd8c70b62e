/** Subscription tiers: limits, planes and features, validated with zod when the module loads. */
import { z } from "zod";

export const PLANES = ["api", "llm", "webhooks", "files"] as const;
export type Plane = (typeof PLANES)[number];

export const RateSchema = z.object({
	/** Tokens added per second. */
	perSecond: z.number().positive(),
	/** Bucket size: the most requests admitted at once. */
	burst: z.number().int().positive(),
});

/** A monthly LLM budget: tokens (prompt + completion) and cost in micro-dollars; null = unlimited. */
export const LlmBudgetSchema = z
	.object({
		monthlyTokens: z.number().int().positive().nullable().default(null),
		monthlyMicroUsd: z.number().int().positive().nullable().default(null),
	})
	.strict();
export type LlmBudget = z.infer<typeof LlmBudgetSchema>;

/** Webhook ingest's own limit: each endpoint has a bucket of its own, beside the tenant's. */
export const WebhookLimitsSchema = z.object({ perEndpoint: RateSchema }).strict();

/** Limits a tenant or key may carry to override its tier's (set by the operator). */
export const LimitsSchema = z
	.object({
		rate: RateSchema.optional(),
		monthlyQuota: z.number().int().positive().optional(),
		/** Monthly LLM budget overriding the tier's (null = unlimited). */
		llmBudget: LlmBudgetSchema.partial().optional(),
		/** Webhook ingest limits overriding the tier's (a tenant's only; ignored on a key). */
		webhooks: WebhookLimitsSchema.optional(),
	})
	.strict();
export type Limits = z.infer<typeof LimitsSchema>;

export const TierPolicySchema = z
	.object({
		/** Higher ranks may do everything lower ranks may. */
		rank: z.number().int().min(0),
		rate: RateSchema,
		monthlyQuota: z.number().int().positive(),
		maxBodyBytes: z.number().int().positive(),
		planes: z.array(z.enum(PLANES)),
		/** LLM aliases (and `provider/model` targets) this tier may use; `*` = any configured target. */
		models: z.array(z.string()),
		llm: z
			.object({
				/** How long a cached LLM answer is served (0 = this tier is never cached). */
				cacheTtlS: z
					.number()
					.int()
					.min(0)
					.max(30 * 86_400),
				budget: LlmBudgetSchema,
			})
			.strict(),
		features: z.array(z.string()),
		/**
		 * Webhook ingest: every verified delivery takes a token from its endpoint's bucket (this rate) and
		 * one from the tenant's bucket (the tier's `rate` and `monthlyQuota`, shared with API traffic).
		 */
		webhooks: WebhookLimitsSchema,
		/**
		 * What admission does when the RateLimiter object cannot be reached. Rate and quota live in the
		 * same object, so a request is refused (503) if either says `closed`; with the default (rate
		 * `open`, quota `closed`) the tier fails closed. Set both to `open` to prefer availability.
		 */
		limiterUnavailable: z.object({ rate: z.enum(["open", "closed"]), quota: z.enum(["open", "closed"]) }),
		/** Most tokens an isolate may hold from one lease, and how long a lease lives. */
		lease: z.object({ maxTokens: z.number().int().min(1), ttlMs: z.number().int().min(50).max(10_000) }),
	})
	.strict();
export type TierPolicy = z.infer<typeof TierPolicySchema>;

export const TIER_NAMES = ["free", "pro", "enterprise"] as const;
export const TierNameSchema = z.enum(TIER_NAMES);
export type TierName = z.infer<typeof TierNameSchema>;

/** The tier table. Change limits here; everything else reads them through {@link tierPolicy}. */
export const TIERS: Record<TierName, TierPolicy> = z.record(TierNameSchema, TierPolicySchema).parse({
	free: {
		rank: 0,
		rate: { perSecond: 5, burst: 20 },
		monthlyQuota: 10_000,
		maxBodyBytes: 64 * 1024,
		planes: ["api", "webhooks"],
		models: ["fast", "embed"],
		llm: { cacheTtlS: 0, budget: { monthlyTokens: 100_000, monthlyMicroUsd: 1_000_000 } },
		features: [],
		webhooks: { perEndpoint: { perSecond: 2, burst: 10 } },
		limiterUnavailable: { rate: "open", quota: "closed" },
		lease: { maxTokens: 5, ttlMs: 1000 },
	},
	pro: {
		rank: 1,
		rate: { perSecond: 50, burst: 200 },
		monthlyQuota: 1_000_000,
		maxBodyBytes: 1024 * 1024,
		planes: ["api", "llm", "webhooks", "files"],
		models: ["fast", "smart", "embed"],
		llm: { cacheTtlS: 300, budget: { monthlyTokens: 10_000_000, monthlyMicroUsd: 100_000_000 } },
		features: ["cache", "byok"],
		webhooks: { perEndpoint: { perSecond: 25, burst: 100 } },
		limiterUnavailable: { rate: "open", quota: "closed" },
		lease: { maxTokens: 25, ttlMs: 1000 },
	},
	enterprise: {
		rank: 2,
		rate: { perSecond: 1000, burst: 5000 },
		monthlyQuota: 100_000_000,
		maxBodyBytes: 10 * 1024 * 1024,
		planes: ["api", "llm", "webhooks", "files"],
		models: ["fast", "smart", "embed", "*"],
		llm: { cacheTtlS: 3600, budget: { monthlyTokens: null, monthlyMicroUsd: null } },
		features: ["cache", "byok", "audit-export"],
		webhooks: { perEndpoint: { perSecond: 500, burst: 2500 } },
		limiterUnavailable: { rate: "open", quota: "closed" },
		lease: { maxTokens: 100, ttlMs: 1000 },
	},
});

export function tierPolicy(tier: TierName): TierPolicy {
	return TIERS[tier];
}

/** The lower of two tiers: a credential may narrow a tenant's tier, never widen it. */
export function narrowerTier(a: TierName, b: TierName | null | undefined): TierName {
	if (!b) return a;
	return TIERS[b].rank < TIERS[a].rank ? b : a;
}
