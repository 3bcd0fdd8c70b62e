/** Admin API handlers: tenants and API keys. Every mutation is audited. */
import type { createRoute, RouteHandler } from "@hono/zod-openapi";
import { and, desc, eq } from "drizzle-orm";
import type { Context } from "hono";
import { appendAudit } from "../audit";
import { type AuthVariables, forgetKey, forgetTenant, generateApiKey, parseLimits } from "../auth";
import { config, parseScopes, type Scope, TierNameSchema } from "../config";
import { type ApiKey, apiKeys, database, type Tenant, tenants } from "../db";
import { ApiError } from "../http";
import type * as routes from "./routes";

export type AdminEnv = { Bindings: Env; Variables: AuthVariables };
type H<R extends Parameters<typeof createRoute>[0]> = RouteHandler<R, AdminEnv>;

function isOperator(c: Context<AdminEnv>): boolean {
	return c.var.principal.tenantId === config(c.env).OPERATOR_TENANT;
}

/** Operators act on any tenant; a tenant's admins only on their own. Others see 404, never a hint. */
function assertTenantAccess(c: Context<AdminEnv>, tenantId: string): void {
	if (c.var.principal.tenantId !== tenantId && !isOperator(c)) {
		throw new ApiError("not-found", "No such tenant.");
	}
}

function assertOperator(c: Context<AdminEnv>): void {
	if (!isOperator(c)) throw new ApiError("forbidden", "Only the operator tenant may do this.");
}

function tenantBody(t: Tenant) {
	return {
		id: t.id,
		name: t.name,
		tier: t.tier,
		status: t.status,
		limits: parseLimits(t.limits),
		createdAt: t.createdAt,
		updatedAt: t.updatedAt,
	};
}

function keyBody(k: ApiKey) {
	return {
		id: k.id,
		tenantId: k.tenantId,
		name: k.name,
		prefix: k.prefix,
		scopes: parseScopes(k.scopes),
		tier: TierNameSchema.safeParse(k.tier).data ?? null,
		limits: parseLimits(k.limits),
		expiresAt: k.expiresAt,
		revokedAt: k.revokedAt,
		lastUsedAt: k.lastUsedAt,
		createdAt: k.createdAt,
	};
}

function audit(
	c: Context<AdminEnv>,
	tenantId: string,
	action: string,
	target: string,
	metadata?: Record<string, unknown>,
) {
	return appendAudit(c.env.DB, {
		tenantId,
		actor: c.var.principal.actor,
		action,
		target,
		requestId: c.var.requestId,
		metadata: metadata ?? null,
	});
}

async function loadTenant(c: Context<AdminEnv>, id: string): Promise<Tenant> {
	const row = await database(c.env.DB).select().from(tenants).where(eq(tenants.id, id)).get();
	if (!row) throw new ApiError("not-found", "No such tenant.");
	return row;
}

export const createTenant: H<typeof routes.createTenant> = async (c) => {
	assertOperator(c);
	const body = c.req.valid("json");
	const db = database(c.env.DB);
	const inserted = await db
		.insert(tenants)
		.values({ id: body.id, name: body.name, tier: body.tier, limits: body.limits ?? null })
		.onConflictDoNothing()
		.returning()
		.get();
	if (!inserted) throw new ApiError("conflict", `Tenant ${body.id} already exists.`);
	forgetTenant(inserted.id); // an earlier "no such tenant" may be cached in this isolate
	await audit(c, inserted.id, "tenant.create", `tenant:${inserted.id}`, { tier: inserted.tier });
	return c.json(tenantBody(inserted), 201);
};

export const getTenant: H<typeof routes.getTenant> = async (c) => {
	const { tenantId } = c.req.valid("param");
	assertTenantAccess(c, tenantId);
	return c.json(tenantBody(await loadTenant(c, tenantId)), 200);
};

export const updateTenant: H<typeof routes.updateTenant> = async (c) => {
	assertOperator(c);
	const { tenantId } = c.req.valid("param");
	const body = c.req.valid("json");
	const before = await loadTenant(c, tenantId);
	const updated = await database(c.env.DB)
		.update(tenants)
		.set({ ...body, updatedAt: Date.now() })
		.where(eq(tenants.id, tenantId))
		.returning()
		.get();
	if (!updated) throw new ApiError("not-found", "No such tenant.");
	forgetTenant(tenantId);
	const changes: Record<string, unknown> = {};
	for (const field of ["name", "tier", "status", "limits"] as const) {
		if (field in body) changes[field] = { from: before[field] ?? null, to: updated[field] ?? null };
	}
	const action =
		body.status && body.status !== before.status
			? body.status === "suspended"
				? "tenant.suspend"
				: "tenant.resume"
			: body.tier && body.tier !== before.tier
				? "tenant.tier.change"
				: "tenant.update";
	await audit(c, tenantId, action, `tenant:${tenantId}`, changes);
	return c.json(tenantBody(updated), 200);
};

function newKeyId(): string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
	let id = "key_";
	for (const b of crypto.getRandomValues(new Uint8Array(16))) id += alphabet[b % alphabet.length];
	return id;
}

export const createKey: H<typeof routes.createKey> = async (c) => {
	const { tenantId } = c.req.valid("param");
	assertTenantAccess(c, tenantId);
	const body = c.req.valid("json");
	// A tenant admin cannot mint a key with more power than its own credential.
	if (!isOperator(c)) {
		const held = new Set<Scope>(c.var.principal.scopes);
		const extra = body.scopes.filter((s) => !held.has(s));
		if (extra.length > 0)
			throw new ApiError("insufficient-scope", `You cannot grant scopes you do not hold: ${extra.join(", ")}.`);
	}
	if (body.expiresAt !== undefined && body.expiresAt <= Date.now()) {
		throw new ApiError("validation-failed", "expiresAt must be in the future.", {
			errors: [{ path: "json.expiresAt", message: "must be in the future" }],
		});
	}
	await loadTenant(c, tenantId);
	const secret = await generateApiKey();
	const row = await database(c.env.DB)
		.insert(apiKeys)
		.values({
			id: newKeyId(),
			tenantId,
			name: body.name,
			prefix: secret.prefix,
			hash: secret.hash,
			scopes: [...new Set(body.scopes)],
			tier: body.tier ?? null,
			limits: body.limits ?? null,
			expiresAt: body.expiresAt ?? null,
		})
		.returning()
		.get();
	await audit(c, tenantId, "api_key.create", `api_key:${row.id}`, { name: row.name, scopes: row.scopes as string[] });
	return c.json({ ...keyBody(row), key: secret.key }, 201);
};

export const listKeys: H<typeof routes.listKeys> = async (c) => {
	const { tenantId } = c.req.valid("param");
	assertTenantAccess(c, tenantId);
	const rows = await database(c.env.DB)
		.select()
		.from(apiKeys)
		.where(eq(apiKeys.tenantId, tenantId))
		.orderBy(desc(apiKeys.createdAt))
		.limit(1000)
		.all();
	return c.json({ keys: rows.map(keyBody) }, 200);
};

export const revokeKey: H<typeof routes.revokeKey> = async (c) => {
	const { tenantId, keyId } = c.req.valid("param");
	assertTenantAccess(c, tenantId);
	const db = database(c.env.DB);
	const existing = await db
		.select()
		.from(apiKeys)
		.where(and(eq(apiKeys.id, keyId), eq(apiKeys.tenantId, tenantId)))
		.get();
	if (!existing) throw new ApiError("not-found", "No such key.");
	if (existing.revokedAt !== null) return c.json(keyBody(existing), 200);
	const revoked = await db
		.update(apiKeys)
		.set({ revokedAt: Date.now() })
		.where(and(eq(apiKeys.id, keyId), eq(apiKeys.tenantId, tenantId)))
		.returning()
		.get();
	if (!revoked) throw new ApiError("not-found", "No such key.");
	forgetKey(revoked.prefix);
	await audit(c, tenantId, "api_key.revoke", `api_key:${keyId}`);
	return c.json(keyBody(revoked), 200);
};
