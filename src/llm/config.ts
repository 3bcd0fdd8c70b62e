/**
 * The LLM plane's configuration: providers, model aliases and their targets, prices, routing,
 * breaker policy and guardrails. One typed, zod-validated object. The built-in default below is
 * what a deployment gets; the `LLM_CONFIG` var (JSON of the same shape) replaces it whole, which is
 * how tests and local set-ups point the plane at stub or local servers — except the guardrails, which
 * every configuration gets as shipped unless it sets them (GuardrailsSchema, in guardrails/schema.ts). Adding an OpenAI-compatible
 * server is configuration only: a provider entry with `kind: "openai-compatible"` and a `baseUrl`.
 */
import { z } from "zod";
import { BreakerPolicySchema } from "../breaker";
import { config } from "../config";
import { checkOutboundUrl } from "../http";
import { perIsolate } from "../lib";
import { GuardrailsSchema, NAME } from "./guardrails/schema";
import { PROVIDER_KINDS } from "./providers/interface";
import { SHIPPED_GUARDRAILS } from "./shipped-guardrails";

export { SHIPPED_GUARDRAILS };

export const ProviderConfigSchema = z
	.object({
		kind: z.enum(PROVIDER_KINDS),
		/** API root, e.g. `https://api.openai.com/v1` (openai, openai-compatible) or `https://api.anthropic.com` (anthropic). */
		baseUrl: z.url().optional(),
		/** Name of the Worker secret holding the gateway's key for this provider. No secret → keyless, or BYOK only. */
		apiKeySecret: z
			.string()
			.regex(/^[A-Z][A-Z0-9_]*$/)
			.optional(),
		/** Whether calls without any key are made (a local server). Otherwise a target without a key is skipped. */
		keyless: z.boolean().default(false),
		/** Extra request headers (never secrets: those go in `apiKeySecret`). */
		headers: z.record(z.string(), z.string()).default({}),
	})
	.strict()
	.refine((p) => p.kind === "workers-ai" || p.baseUrl, { message: "baseUrl is required for HTTP providers" });
export type ProviderConfig = z.infer<typeof ProviderConfigSchema>;

export const TargetSchema = z
	.object({
		provider: z.string().regex(NAME),
		/** The upstream's model id. */
		model: z.string().min(1).max(200),
		/** Share of traffic among targets of the same priority. */
		weight: z.number().positive().default(1),
		/** Lower goes first; higher priorities are fallbacks. */
		priority: z.number().int().min(0).default(0),
	})
	.strict();
export type Target = z.infer<typeof TargetSchema>;

export const AliasSchema = z
	.object({
		kind: z.enum(["chat", "embeddings"]).default("chat"),
		targets: z.array(TargetSchema).min(1).max(32),
	})
	.strict();
export type Alias = z.infer<typeof AliasSchema>;

/** US dollars per million tokens (which is also micro-dollars per token). */
export const PriceSchema = z.object({ input: z.number().min(0), output: z.number().min(0) }).strict();
export type Price = z.infer<typeof PriceSchema>;

export const FALLBACK_CAUSES = ["429", "5xx", "timeout", "connection", "circuit-open"] as const;
export type FallbackCause = (typeof FALLBACK_CAUSES)[number];

export const RoutingSchema = z
	.object({
		/** One upstream attempt (for a stream: until its first chunk). */
		attemptTimeoutMs: z.number().int().min(1).max(600_000).default(30_000),
		/** The whole request, every attempt included. */
		deadlineMs: z.number().int().min(1).max(900_000).default(120_000),
		/** Longest silence allowed inside a started stream before it is cut. */
		streamIdleTimeoutMs: z.number().int().min(1).max(600_000).default(60_000),
		/** Extra attempts on the same target before falling back to the next one. */
		retriesPerTarget: z.number().int().min(0).max(10).default(1),
		/** Full-jitter backoff: a random delay in [0, min(max, base · 2^attempt)]. */
		backoffBaseMs: z.number().int().min(0).max(60_000).default(200),
		backoffMaxMs: z.number().int().min(0).max(60_000).default(5_000),
		/** An upstream's Retry-After is honoured up to this; longer means move on to the next target. */
		retryAfterCapMs: z.number().int().min(0).max(60_000).default(10_000),
		/** Which failures move on to the next target (the others are answered at once). */
		fallbackOn: z.array(z.enum(FALLBACK_CAUSES)).default([...FALLBACK_CAUSES]),
	})
	.strict();
export type Routing = z.infer<typeof RoutingSchema>;

export const LlmConfigSchema = z
	.object({
		providers: z.record(z.string().regex(NAME), ProviderConfigSchema),
		aliases: z.record(z.string().regex(NAME), AliasSchema),
		/** Keyed `provider/model`. A model without a price is charged at the table's highest prices (see priceOf). */
		prices: z.record(z.string(), PriceSchema).default({}),
		routing: RoutingSchema.default(RoutingSchema.parse({})),
		/** Policy of every provider breaker (per tenant × target, and the gateway's per provider). */
		breaker: BreakerPolicySchema.default(BreakerPolicySchema.parse({})),
		guardrails: GuardrailsSchema.default(() => GuardrailsSchema.parse({})),
		/** Output tokens reserved against a budget when the request sets no max_tokens. */
		defaultMaxOutputTokens: z.number().int().min(1).max(1_000_000).default(4096),
	})
	.strict()
	.superRefine((cfg, ctx) => {
		for (const [alias, def] of Object.entries(cfg.aliases)) {
			for (const t of def.targets) {
				if (!cfg.providers[t.provider]) {
					ctx.addIssue({ code: "custom", path: ["aliases", alias], message: `unknown provider ${t.provider}` });
				}
			}
		}
	});
export type LlmConfig = z.infer<typeof LlmConfigSchema>;

/** What a deployment gets without `LLM_CONFIG`. Keys come from Worker secrets; Workers AI from the `AI` binding. */
export const DEFAULT_LLM_CONFIG: z.input<typeof LlmConfigSchema> = {
	providers: {
		"workers-ai": { kind: "workers-ai" },
		openai: { kind: "openai", baseUrl: "https://api.openai.com/v1", apiKeySecret: "OPENAI_API_KEY" },
		anthropic: { kind: "anthropic", baseUrl: "https://api.anthropic.com", apiKeySecret: "ANTHROPIC_API_KEY" },
	},
	aliases: {
		fast: {
			targets: [
				{ provider: "workers-ai", model: "@cf/meta/llama-3.1-8b-instruct-fast" },
				{ provider: "openai", model: "gpt-4o-mini", priority: 1 },
			],
		},
		smart: {
			targets: [
				{ provider: "anthropic", model: "claude-sonnet-4-5" },
				{ provider: "openai", model: "gpt-4.1", priority: 1 },
			],
		},
		embed: {
			kind: "embeddings",
			targets: [
				{ provider: "workers-ai", model: "@cf/baai/bge-base-en-v1.5" },
				{ provider: "openai", model: "text-embedding-3-small", priority: 1 },
			],
		},
	},
	prices: {
		"workers-ai/@cf/meta/llama-3.1-8b-instruct-fast": { input: 0.045, output: 0.384 },
		"workers-ai/@cf/baai/bge-base-en-v1.5": { input: 0.067, output: 0 },
		"openai/gpt-4o-mini": { input: 0.15, output: 0.6 },
		"openai/gpt-4.1": { input: 2, output: 8 },
		"openai/text-embedding-3-small": { input: 0.02, output: 0 },
		"anthropic/claude-sonnet-4-5": { input: 3, output: 15 },
	},
	// guardrails: left out, so SHIPPED_GUARDRAILS, as for every configuration that does not set them.
};

/** Parsed configurations by source text, one map per ALLOW_PRIVATE_OUTBOUND value (no key built per request). */
const parsed = { private: new Map<string, LlmConfig>(), public: new Map<string, LlmConfig>() };

/**
 * Where ALLOW_PRIVATE_OUTBOUND is off (staging, production), a provider's baseUrl must pass the
 * outbound-URL guard too: a loopback or internal upstream there is a configuration mistake.
 */
function baseUrlIssues(cfg: LlmConfig): string[] {
	return Object.entries(cfg.providers).flatMap(([name, p]) => {
		const check = p.baseUrl ? checkOutboundUrl(p.baseUrl, { allowPrivate: false }) : null;
		return check && !check.ok ? [`providers.${name}.baseUrl: ${check.message}`] : [];
	});
}

/** The plane's configuration for this env: `LLM_CONFIG` if set, else the default. Parsed once per distinct value. */
export function llmConfig(env: Env): LlmConfig {
	const { LLM_CONFIG, ALLOW_PRIVATE_OUTBOUND } = config(env);
	const source = LLM_CONFIG ?? "";
	const cache = ALLOW_PRIVATE_OUTBOUND ? parsed.private : parsed.public;
	let cfg = cache.get(source);
	if (!cfg) {
		const result = LlmConfigSchema.safeParse(source ? JSON.parse(source) : DEFAULT_LLM_CONFIG);
		if (!result.success) {
			const fields = result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
			throw new Error(`Invalid LLM_CONFIG: ${fields}`);
		}
		const issues = ALLOW_PRIVATE_OUTBOUND ? [] : baseUrlIssues(result.data);
		if (issues.length > 0) throw new Error(`Invalid LLM_CONFIG: ${issues.join("; ")}`);
		cfg = result.data;
		cache.set(source, cfg);
	}
	return cfg;
}

/** The table's highest input and output prices, per parsed configuration; null for a table without prices. */
const highestPrice = perIsolate((cfg: LlmConfig): Price | null => {
	const all = Object.values(cfg.prices);
	if (all.length === 0) return null;
	return { input: Math.max(...all.map((p) => p.input)), output: Math.max(...all.map((p) => p.output)) };
});

/**
 * The price of `provider/model`. A model missing from the table (one a `*` tier may name) is charged at
 * the table's highest input and output prices, so an unpriced model can never slip past a dollar budget;
 * only a configuration without any price charges nothing.
 */
export function priceOf(cfg: LlmConfig, provider: string, model: string): Price | null {
	return cfg.prices[`${provider}/${model}`] ?? highestPrice(cfg);
}

/** Cost in micro-dollars (integer, rounded up so a budget is never undercharged). */
export function costMicroUsd(price: Price | null, promptTokens: number, completionTokens: number): number {
	if (!price) return 0;
	return Math.ceil(promptTokens * price.input + completionTokens * price.output);
}
