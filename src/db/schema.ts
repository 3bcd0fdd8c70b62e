/** The D1 schema. Migrations in `migrations/` are generated from this file by drizzle-kit. */
import { sql } from "drizzle-orm";
import { index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

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
	},
	(t) => [index("audit_log_tenant_idx").on(t.tenantId, t.id)],
);

export type Tenant = typeof tenants.$inferSelect;
export type ApiKey = typeof apiKeys.$inferSelect;
export type AuditRecord = typeof auditLog.$inferSelect;
