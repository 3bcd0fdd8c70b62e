/** The Worker's string vars and secrets, parsed once per isolate with zod. */
import { z } from "zod";
import { perIsolate } from "../lib";

const optionalString = z
	.string()
	.optional()
	.transform((v) => (v?.trim() ? v.trim() : undefined));

/**
 * Days each table keeps its rows before the retention sweep (src/retention) deletes them. The audit
 * log is never pruned (append-only and hash-chained). Defaults documented in README ("Retention").
 */
export const RetentionSchema = z.strictObject({
	/** Done (event, handler) records; kept longer for events with a replayable dead letter. */
	processedEvents: z.number().int().min(1).max(36_500).default(30),
	/** Last failures of (event, handler), by their last update; kept longer for replayable dead letters. */
	eventFailures: z.number().int().min(1).max(36_500).default(30),
	/** Processed and forwarded webhook deliveries, with their R2 payloads, by when they were received. */
	webhookDeliveries: z.number().int().min(1).max(36_500).default(30),
	/** LLM usage records, by UTC day: longer than the usage report's longest range (366 days). */
	llmUsage: z.number().int().min(1).max(36_500).default(400),
});
export type Retention = z.infer<typeof RetentionSchema>;

export const ConfigSchema = z.object({
	ENVIRONMENT: z.enum(["development", "test", "staging", "production"]),
	JWT_ISSUER: z.string().min(1),
	JWT_AUDIENCE: z.string().min(1),
	JWT_CLOCK_TOLERANCE_S: z.coerce.number().int().min(0).max(300).default(30),
	JWKS_URL: optionalString.pipe(z.url().optional()),
	JWT_HS256_SECRET: optionalString.pipe(
		z.string().min(32, "JWT_HS256_SECRET must be at least 32 characters").optional(),
	),
	/** Multiplies the webhook forwarder's Standard Webhooks retry schedule (1 in production; 0 in tests). */
	FORWARD_RETRY_SCALE: z.coerce.number().min(0).max(10).default(1),
	/** 32 random bytes, base64: seals webhook secrets and tenant provider keys at rest. */
	ENCRYPTION_KEY: optionalString,
	CORS_ORIGINS: z.string().default(""),
	/** The LLM plane's configuration as JSON (src/llm/config.ts); empty = the built-in default. */
	LLM_CONFIG: optionalString,
	OPERATOR_TENANT: z.string().min(1),
	/**
	 * Whether tenant-supplied URLs (webhook destinations) may point at loopback, private, link-local
	 * or internal targets (src/http/outbound-url.ts). "true" only in local development and tests.
	 */
	ALLOW_PRIVATE_OUTBOUND: z
		.enum(["true", "false"])
		.default("false")
		.transform((v) => v === "true"),
	// Written from waitUntil, which ends ~30 s after the response: the window must close well before.
	AUTH_FAILURE_WINDOW_S: z.coerce.number().min(0.05).max(25).default(10),
	/** Optional JSON overriding some of {@link RetentionSchema}'s days, e.g. `{"llmUsage": 800}`. */
	RETENTION: optionalString.transform((v, ctx) => {
		try {
			return RetentionSchema.parse(v ? JSON.parse(v) : {});
		} catch {
			ctx.addIssue({ code: "custom", message: "RETENTION must be a JSON object of days per table" });
			return z.NEVER;
		}
	}),
});

export type Config = z.infer<typeof ConfigSchema>;

/** Parses (and caches per env object) the configuration; a bad value fails loudly at start-up. */
export const config = perIsolate((env: Env): Config => {
	const result = ConfigSchema.safeParse(env);
	if (!result.success) {
		const fields = result.error.issues.map((i) => i.path.join(".")).join(", ");
		throw new Error(`Invalid Worker configuration: ${fields}`);
	}
	const parsed = result.data;
	if (parsed.ENVIRONMENT === "production" && parsed.JWT_HS256_SECRET) {
		throw new Error("Invalid Worker configuration: HS256 secrets are for development only");
	}
	return parsed;
});
