/** The D1 schema. Migrations in `migrations/` are generated from this file by drizzle-kit. */
import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** Milliseconds since the epoch, set by the database when the row is written. */
const createdAt = () => integer("created_at").notNull().default(sql`(cast(unixepoch('subsec') * 1000 as integer))`);

export const tenants = sqliteTable("tenants", {
	id: text("id").primaryKey(),
	name: text("name").notNull(),
	tier: text("tier", { enum: ["free", "pro", "enterprise"] }).notNull(),
	status: text("status", { enum: ["active", "suspended"] })
		.notNull()
		.default("active"),
	/** Operator overrides of the tier's rate and quota, JSON (see LimitsSchema). */
	limits: text("limits", { mode: "json" }),
	createdAt: createdAt(),
	updatedAt: integer("updated_at"),
});

export const apiKeys = sqliteTable(
	"api_keys",
	{
		id: text("id").primaryKey(),
		tenantId: text("tenant_id")
			.notNull()
			.references(() => tenants.id),
		name: text("name").notNull(),
		/** The public part of the key (`ew_xxxxxxxxxxxx`), used to find the row. */
		prefix: text("prefix").notNull(),
		/** SHA-256 of the whole key, hex. The key itself is never stored. */
		hash: text("hash").notNull(),
		scopes: text("scopes", { mode: "json" }).notNull(),
		/** Narrows the tenant's tier for requests made with this key. */
		tier: text("tier", { enum: ["free", "pro", "enterprise"] }),
		/** A per-key bucket and quota enforced on top of the tenant's. */
		limits: text("limits", { mode: "json" }),
		expiresAt: integer("expires_at"),
		revokedAt: integer("revoked_at"),
		lastUsedAt: integer("last_used_at"),
		createdAt: createdAt(),
	},
	(t) => [uniqueIndex("api_keys_prefix_unique").on(t.prefix), index("api_keys_tenant_idx").on(t.tenantId)],
);

export const auditLog = sqliteTable(
	"audit_log",
	{
		id: integer("id").primaryKey({ autoIncrement: true }),
		tenantId: text("tenant_id").notNull(),
		/** Who did it: `key:<id>`, `jwt:<sub>`, `system`. */
		actor: text("actor").notNull(),
		action: text("action").notNull(),
		target: text("target"),
		requestId: text("request_id"),
		/** Extra facts, JSON. Never a secret. */
		metadata: text("metadata", { mode: "json" }),
		createdAt: createdAt(),
		/** Position in the tenant's hash chain (1, 2, …). Records written before the chain existed have none. */
		seq: integer("seq"),
		/** Hash of the tenant's previous record (hex; "" for the first). */
		prevHash: text("prev_hash"),
		/** SHA-256 over prevHash and this record's canonical fields (hex). */
		hash: text("hash"),
		/** The event this record was written for, when it came through the events queue: written once. */
		eventId: text("event_id"),
	},
	// Every read goes through (tenant_id, seq), also the legacy records' (seq IS NULL, by rowid): no other index.
	(t) => [
		uniqueIndex("audit_log_tenant_seq_unique").on(t.tenantId, t.seq),
		uniqueIndex("audit_log_event_unique").on(t.eventId),
	],
);

export const webhookEndpoints = sqliteTable(
	"webhook_endpoints",
	{
		id: text("id").primaryKey(),
		tenantId: text("tenant_id")
			.notNull()
			.references(() => tenants.id),
		name: text("name").notNull(),
		source: text("source", { enum: ["github", "stripe", "slack", "standard", "hmac"] }).notNull(),
		/** The 1–2 active signing secrets, sealed with AES-GCM (src/storage). Never returned. */
		secrets: text("secrets").notNull(),
		/** Source options (tolerance; header, algorithm and encoding for generic HMAC), JSON. */
		config: text("config", { mode: "json" }),
		/** Where verified events are forwarded, signed with Standard Webhooks. */
		destinationUrl: text("destination_url"),
		/** The secret that signs forwarded events, sealed like `secrets`. */
		destinationSecret: text("destination_secret"),
		status: text("status", { enum: ["active", "disabled"] })
			.notNull()
			.default("active"),
		createdAt: createdAt(),
		updatedAt: integer("updated_at"),
	},
	(t) => [index("webhook_endpoints_tenant_idx").on(t.tenantId)],
);

export const webhookDeliveries = sqliteTable(
	"webhook_deliveries",
	{
		id: text("id").primaryKey(),
		tenantId: text("tenant_id").notNull(),
		endpointId: text("endpoint_id")
			.notNull()
			.references(() => webhookEndpoints.id),
		/** The sender's delivery id (or a digest of the body when the source has none). */
		deliveryId: text("delivery_id").notNull(),
		eventType: text("event_type"),
		/** `parked`: its event could not be enqueued after MAX_ENQUEUE_FAILURES tries; only a replay moves it. */
		status: text("status", { enum: ["received", "processed", "forwarded", "failed", "parked"] })
			.notNull()
			.default("received"),
		attempts: integer("attempts").notNull().default(0),
		lastError: text("last_error"),
		/** The raw body, base64, when small; otherwise in R2 under `payloadKey`. */
		payload: text("payload"),
		payloadKey: text("payload_key"),
		payloadBytes: integer("payload_bytes").notNull(),
		contentType: text("content_type"),
		/** Set when the consumer first handles the delivery's event; the sweep re-enqueues rows left without it. */
		enqueuedAt: integer("enqueued_at"),
		/** Times the queue refused the delivery's event (at ingest, on a redelivery or in the sweep). */
		enqueueFailures: integer("enqueue_failures").notNull().default(0),
		/** When the sweep may next try to enqueue the event (ms); set at ingest, pushed back after each refusal. */
		nextEnqueueAt: integer("next_enqueue_at").notNull().default(0),
		receivedAt: createdAt(),
		updatedAt: integer("updated_at"),
	},
	(t) => [
		uniqueIndex("webhook_deliveries_endpoint_delivery_unique").on(t.endpointId, t.deliveryId),
		index("webhook_deliveries_tenant_idx").on(t.tenantId, t.receivedAt),
		// The sweep's query: received, never enqueued, due. Partial, so only the rows waiting for an event are in it.
		index("webhook_deliveries_due_idx")
			.on(t.nextEnqueueAt)
			.where(sql`${t.status} = 'received' and ${t.enqueuedAt} is null`),
	],
);

/**
 * (event, handler) pairs whose effect is done: a redelivered or replayed event skips them. Only for
 * handlers not idempotent on their own (see EventHandler.idempotent). WITHOUT ROWID (migration
 * 0006_retention_rows; drizzle cannot say so): one row written per insert, not a row and an index entry.
 */
export const processedEvents = sqliteTable(
	"processed_events",
	{
		eventId: text("event_id").notNull(),
		handler: text("handler").notNull(),
		processedAt: createdAt(),
	},
	(t) => [primaryKey({ columns: [t.eventId, t.handler] })],
);

/** The last failure of each (event, handler), read when an event is dead-lettered. WITHOUT ROWID, as processed_events. */
export const eventFailures = sqliteTable(
	"event_failures",
	{
		eventId: text("event_id").notNull(),
		handler: text("handler").notNull(),
		attempts: integer("attempts").notNull(),
		lastError: text("last_error").notNull(),
		updatedAt: integer("updated_at").notNull(),
	},
	(t) => [primaryKey({ columns: [t.eventId, t.handler] })],
);

export const deadLetters = sqliteTable(
	"dead_letters",
	{
		id: text("id").primaryKey(),
		eventId: text("event_id").notNull(),
		tenantId: text("tenant_id").notNull(),
		type: text("type").notNull(),
		/** The whole event envelope, JSON. */
		event: text("event", { mode: "json" }).notNull(),
		error: text("error"),
		attempts: integer("attempts").notNull(),
		status: text("status", { enum: ["dead", "replayed"] })
			.notNull()
			.default("dead"),
		createdAt: createdAt(),
		replayedAt: integer("replayed_at"),
	},
	(t) => [
		uniqueIndex("dead_letters_event_unique").on(t.eventId),
		index("dead_letters_tenant_idx").on(t.tenantId, t.createdAt),
	],
);

/**
 * One row per LLM request (written by the usage recorder from `llm.usage` events). WITHOUT ROWID
 * (migration 0006_retention_rows): the id is the key, so an insert writes the row and the report's index only.
 */
export const llmUsage = sqliteTable(
	"llm_usage",
	{
		/** The usage record's id: a redelivered or replayed event writes nothing twice. */
		id: text("id").primaryKey(),
		tenantId: text("tenant_id").notNull(),
		/** `key:<id>` or `jwt:<sub>`. */
		actor: text("actor").notNull(),
		keyId: text("key_id"),
		requestId: text("request_id"),
		/** `chat` or `embeddings`. */
		operation: text("operation").notNull(),
		/** What the caller asked for (alias or provider/model). */
		requested: text("requested").notNull(),
		/** Who served it; null when nothing did. */
		provider: text("provider"),
		model: text("model"),
		promptTokens: integer("prompt_tokens").notNull(),
		completionTokens: integer("completion_tokens").notNull(),
		/** 1 when the provider reported no usage and the counts are the gateway's estimate. */
		estimated: integer("estimated").notNull().default(0),
		costMicroUsd: integer("cost_micro_usd").notNull(),
		latencyMs: integer("latency_ms").notNull(),
		/** HTTP status answered to the client. */
		status: integer("status").notNull(),
		cacheHit: integer("cache_hit").notNull().default(0),
		byok: integer("byok").notNull().default(0),
		attempts: integer("attempts").notNull(),
		/** UTC day, `YYYY-MM-DD`, for the by-day report. */
		day: text("day").notNull(),
		createdAt: integer("created_at").notNull(),
	},
	(t) => [index("llm_usage_tenant_day_idx").on(t.tenantId, t.day, t.model)],
);

/** Tenants' own provider keys (BYOK), sealed with ENCRYPTION_KEY and bound to the tenant. */
export const providerKeys = sqliteTable(
	"provider_keys",
	{
		tenantId: text("tenant_id")
			.notNull()
			.references(() => tenants.id),
		provider: text("provider").notNull(),
		sealedKey: text("sealed_key").notNull(),
		/** Last four characters, to tell keys apart without revealing them. */
		hint: text("hint").notNull(),
		createdAt: createdAt(),
		updatedAt: integer("updated_at"),
	},
	(t) => [primaryKey({ columns: [t.tenantId, t.provider] })],
);

/** The breakers that exist, and their last known state (kept from `breaker.transition` events), for operators. */
export const breakers = sqliteTable(
	"breakers",
	{
		/** The Durable Object's name (`tenant:<id>:<target>` or `gateway:<target>`). */
		name: text("name").primaryKey(),
		/** The owning tenant; the operator tenant for the gateway's own breakers. */
		tenantId: text("tenant_id").notNull(),
		target: text("target").notNull(),
		state: text("state", { enum: ["closed", "open", "half_open"] }).notNull(),
		/** The transition's sequence number: an older event never overwrites a newer state. */
		seq: integer("seq").notNull(),
		reason: text("reason"),
		updatedAt: integer("updated_at").notNull(),
	},
	(t) => [index("breakers_tenant_idx").on(t.tenantId)],
);

export type Tenant = typeof tenants.$inferSelect;
export type ApiKey = typeof apiKeys.$inferSelect;
export type AuditRecord = typeof auditLog.$inferSelect;
export type WebhookEndpoint = typeof webhookEndpoints.$inferSelect;
export type WebhookDelivery = typeof webhookDeliveries.$inferSelect;
export type DeadLetter = typeof deadLetters.$inferSelect;
export type LlmUsage = typeof llmUsage.$inferSelect;
export type ProviderKey = typeof providerKeys.$inferSelect;
export type BreakerRow = typeof breakers.$inferSelect;
