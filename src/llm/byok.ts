/**
 * Bring-your-own provider keys. A tenant (on a tier with the `byok` feature) stores its own key per
 * provider through the admin API; it is sealed with ENCRYPTION_KEY (AES-GCM, bound to the tenant and
 * the provider), never returned (only its last four characters, to tell keys apart), and used in
 * preference to the gateway's key. An isolate keeps a tenant's unsealed keys for {@link KEY_CACHE_MS},
 * so a replaced or deleted key takes effect within that on every isolate (at once on this one).
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, eq } from "drizzle-orm";
import type { Context } from "hono";
import { type AuditEntry, commitWithAudit } from "../audit";
import { config, tierPolicy } from "../config";
import { database, providerKeys, tenants } from "../db";
import { ApiError, type AppEnv, BEARER, createRouter, jsonResponse, log, problems } from "../http";
import { errorText, TtlLru } from "../lib";
import { seal, unseal } from "../storage";
import type { LlmConfig, ProviderConfig } from "./config";
import { llmConfig } from "./config";
import type { CallKey } from "./router";

export const KEY_CACHE_MS = 5_000;

const cache = new TtlLru<string, Map<string, string>>(1000);
/** Bumped when a tenant's keys change here, so a read that began before the change is not cached after it. */
const generations = new Map<string, number>();

function forget(tenantId: string): void {
	cache.delete(tenantId);
	generations.set(tenantId, (generations.get(tenantId) ?? 0) + 1);
}

function additionalData(tenantId: string, provider: string): string {
	return `${tenantId}:provider-key:${provider}`;
}

/**
 * The tenant's unsealed keys by provider, cached per isolate for KEY_CACHE_MS. Each request that finds
 * no fresh entry reads for itself (a promise is never shared across requests). A key that cannot be
 * unsealed (ENCRYPTION_KEY changed) is left out and logged; the gateway's key is used instead.
 */
async function tenantKeys(env: Env, tenantId: string): Promise<Map<string, string>> {
	const cached = cache.get(tenantId);
	if (cached) return cached;
	const generation = generations.get(tenantId) ?? 0;
	const rows = await database(env.DB)
		.select({ provider: providerKeys.provider, sealedKey: providerKeys.sealedKey })
		.from(providerKeys)
		.where(eq(providerKeys.tenantId, tenantId));
	const map = new Map<string, string>();
	const secret = config(env).ENCRYPTION_KEY;
	for (const row of rows) {
		try {
			if (secret) map.set(row.provider, await unseal(secret, additionalData(tenantId, row.provider), row.sealedKey));
		} catch {
			log("error", "tenant provider key cannot be unsealed; using the gateway's key", {
				tenantId,
				provider: row.provider,
			});
		}
	}
	if ((generations.get(tenantId) ?? 0) === generation) cache.set(tenantId, map, Date.now() + KEY_CACHE_MS);
	return map;
}

/**
 * The key resolver of one request: the tenant's own key when its tier allows BYOK and one is stored,
 * else the gateway's (the provider's `apiKeySecret` Worker secret), else none for keyless providers,
 * else null (the target is skipped).
 */
export function keyResolver(env: Env, tenantId: string, byokAllowed: boolean) {
	const secrets = env as unknown as Record<string, unknown>;
	return async (provider: string, p: ProviderConfig): Promise<CallKey | null> => {
		if (p.kind === "workers-ai") return { byok: false };
		if (byokAllowed) {
			try {
				const own = (await tenantKeys(env, tenantId)).get(provider);
				if (own) return { apiKey: own, byok: true };
			} catch (err) {
				// D1 unreachable: the gateway's key still serves (the tenant's key is preferred, not required).
				log("warn", "tenant provider keys unavailable; using the gateway's key", {
					tenantId,
					reason: errorText(err),
				});
			}
		}
		const gateway = p.apiKeySecret ? secrets[p.apiKeySecret] : undefined;
		if (typeof gateway === "string" && gateway.trim()) return { apiKey: gateway.trim(), byok: false };
		return p.keyless ? { byok: false } : null;
	};
}

// ---------------------------------------------------------------- admin API

const TenantId = z.string().regex(/^[a-z0-9][a-z0-9-]{1,62}$/);
const ProviderName = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/);
const ProviderKeySchema = z
	.object({
		provider: z.string(),
		hint: z.string(),
		createdAt: z.number().int(),
		updatedAt: z.number().int().nullable(),
	})
	.openapi("ProviderKey");
const params = z.object({ tenantId: TenantId, provider: ProviderName });

const putKey = createRoute({
	method: "put",
	path: "/tenants/{tenantId}/provider-keys/{provider}",
	summary: "Store the tenant's own key for an LLM provider (replaces any previous one; never returned)",
	security: BEARER,
	request: {
		params,
		body: {
			required: true,
			content: { "application/json": { schema: z.object({ key: z.string().min(8).max(1024) }).strict() } },
		},
	},
	responses: {
		200: jsonResponse(ProviderKeySchema, "The stored key's description"),
		...problems(400, 401, 403, 404, 429),
	},
});

const listKeys = createRoute({
	method: "get",
	path: "/tenants/{tenantId}/provider-keys",
	summary: "The providers the tenant has its own key for",
	security: BEARER,
	request: { params: z.object({ tenantId: TenantId }) },
	responses: {
		200: jsonResponse(z.object({ keys: z.array(ProviderKeySchema) }), "The tenant's provider keys, without the keys"),
		...problems(401, 403, 404, 429),
	},
});

const deleteKey = createRoute({
	method: "delete",
	path: "/tenants/{tenantId}/provider-keys/{provider}",
	summary: "Delete the tenant's own key for a provider (the gateway's key is used again)",
	security: BEARER,
	request: { params },
	responses: { 204: { description: "Deleted" }, ...problems(401, 403, 404, 429) },
});

function assertAccess(c: Context<AppEnv>, tenantId: string): void {
	if (c.var.principal.tenantId !== tenantId && c.var.principal.tenantId !== config(c.env).OPERATOR_TENANT) {
		throw new ApiError("not-found", "No such tenant.");
	}
}

function assertProvider(cfg: LlmConfig, provider: string): void {
	const p = cfg.providers[provider];
	if (!p || p.kind === "workers-ai") throw new ApiError("not-found", `No provider \`${provider}\` takes a key.`);
}

function audit(c: Context<AppEnv>, tenantId: string, action: string, provider: string): AuditEntry {
	return {
		tenantId,
		actor: c.var.principal.actor,
		action,
		target: `provider-key:${provider}`,
		requestId: c.var.requestId,
		metadata: null,
	};
}

/** `/tenants/{tenantId}/provider-keys…`, mounted under /v1/admin (scope `admin`). */
export function providerKeyRoutes() {
	const app = createRouter<AppEnv>();

	app.openapi(putKey, async (c) => {
		const { tenantId, provider } = c.req.valid("param");
		assertAccess(c, tenantId);
		assertProvider(llmConfig(c.env), provider);
		if (!tierPolicy(c.var.principal.tier).features.includes("byok")) {
			throw new ApiError("tier-not-allowed", "Your plan does not include bring-your-own provider keys.");
		}
		const secret = config(c.env).ENCRYPTION_KEY;
		if (!secret)
			throw new ApiError("dependency-unavailable", "Key storage is not configured.", { reason: "no ENCRYPTION_KEY" });
		// The operator may name any tenant: one that does not exist is a 404, not a foreign-key failure.
		// (Tenants are never deleted, so the row read here is still there for the insert.)
		const tenant = await database(c.env.DB)
			.select({ id: tenants.id })
			.from(tenants)
			.where(eq(tenants.id, tenantId))
			.get();
		if (!tenant) throw new ApiError("not-found", "No such tenant.");
		const { key } = c.req.valid("json");
		const sealedKey = await seal(secret, additionalData(tenantId, provider), key);
		const hint = key.slice(-4);
		const now = Date.now();
		const [rows] = await commitWithAudit(c.env.DB, audit(c, tenantId, "provider-key.put", provider), (db) => [
			db
				.insert(providerKeys)
				.values({ tenantId, provider, sealedKey, hint })
				.onConflictDoUpdate({
					target: [providerKeys.tenantId, providerKeys.provider],
					set: { sealedKey, hint, updatedAt: now },
				})
				.returning(),
		]);
		forget(tenantId);
		const row = rows[0];
		if (!row) throw new Error("provider key upsert returned no row");
		return c.json({ provider, hint: row.hint, createdAt: row.createdAt, updatedAt: row.updatedAt }, 200);
	});

	app.openapi(listKeys, async (c) => {
		const { tenantId } = c.req.valid("param");
		assertAccess(c, tenantId);
		const rows = await database(c.env.DB)
			.select({
				provider: providerKeys.provider,
				hint: providerKeys.hint,
				createdAt: providerKeys.createdAt,
				updatedAt: providerKeys.updatedAt,
			})
			.from(providerKeys)
			.where(eq(providerKeys.tenantId, tenantId));
		return c.json({ keys: rows }, 200);
	});

	app.openapi(deleteKey, async (c) => {
		const { tenantId, provider } = c.req.valid("param");
		assertAccess(c, tenantId);
		const where = and(eq(providerKeys.tenantId, tenantId), eq(providerKeys.provider, provider));
		const existing = await database(c.env.DB).select({ p: providerKeys.provider }).from(providerKeys).where(where);
		if (existing.length === 0) throw new ApiError("not-found", `No key stored for \`${provider}\`.`);
		await commitWithAudit(c.env.DB, audit(c, tenantId, "provider-key.delete", provider), (db) => [
			db.delete(providerKeys).where(where),
		]);
		forget(tenantId);
		return c.body(null, 204);
	});

	return app;
}
