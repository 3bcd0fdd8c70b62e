/** Admin API handlers: tenants and API keys. Every mutation commits together with its audit record. */
import type { createRoute, RouteHandler } from "@hono/zod-openapi";
import { and, desc, eq } from "drizzle-orm";
import type { Context } from "hono";
import { type AuditEntry, commitWithAudit } from "../audit";
import { forgetKey, forgetTenant, generateApiKey, parseLimits } from "../auth";
import { config, parseScopes, type Scope, TierNameSchema } from "../config";
import { type ApiKey, apiKeys, database, newId, type Tenant, tenants } from "../db";
import { ApiError, type AppEnv } from "../http";
import type * as routes from "./routes";

type H<R extends Parameters<typeof createRoute>[0]> = RouteHandler<R, AppEnv>;

function isOperator(c: Context<AppEnv>): boolean {
	return c.var.principal.tenantId === config(c.env).OPERATOR_TENANT;
}

/** Operators act on any tenant; a tenant's admins only on their own. Others see 404, never a hint. */
function assertTenantAccess(c: Context<AppEnv>, tenantId: string): void {
	if (c.var.principal.tenantId !== tenantId && !isOperator(c)) {
		throw new ApiError("not-found", "No such tenant.");
	}
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

/**
 * The audit record of a mutation by the caller; committed in the same batch as the mutation by
 * commitWithAudit, which runs the batch again if the record lost its seq to a concurrent writer (the
 * mutation having rolled back with it).
 */
function auditOf(
	c: Context<AppEnv>,
	tenantId: string,
	action: string,
	target: string,
	metadata?: Record<string, unknown>,
): AuditEntry {
	return {
		tenantId,
		actor: c.var.principal.actor,
		action,
		target,
		requestId: c.var.requestId,
		metadata: metadata ?? null,
	};
}

/**
 * SQLite's message for a second tenant with an existing id. A failed D1 batch throws
 * `D1_ERROR: UNIQUE constraint failed: tenants.id: SQLITE_CONSTRAINT…`; a drizzle query wraps the same
 * error as its `cause`. Nothing else may become a 409.
 */
const DUPLICATE_TENANT_ID = /\bUNIQUE constraint failed: tenants\.id\b/;

function isDuplicateTenantId(err: unknown): boolean {
	for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
		if (DUPLICATE_TENANT_ID.test(e.message)) return true;
	}
	return false;
}

async function loadTenant(c: Context<AppEnv>, id: string): Promise<Tenant> {
	const row = await database(c.env.DB).select().from(tenants).where(eq(tenants.id, id)).get();
	if (!row) throw new ApiError("not-found", "No such tenant.");
	return row;
}

// Operator only: the route declares requireOperator().
export const createTenant: H<typeof routes.createTenant> = async (c) => {
	const body = c.req.valid("json");
	// A plain insert, so that an existing id fails the whole batch and no audit record is written for it.
	// It comes first in the batch: an existing id is reported as such, never retried as a lost seq race.
	const [[inserted]] = await commitWithAudit(
		c.env.DB,
		auditOf(c, body.id, "tenant.create", `tenant:${body.id}`, { tier: body.tier }),
		(db) => [
			db
				.insert(tenants)
				.values({ id: body.id, name: body.name, tier: body.tier, limits: body.limits ?? null })
				.returning(),
		],
	).catch((err: unknown) => {
		if (isDuplicateTenantId(err)) throw new ApiError("conflict", `Tenant ${body.id} already exists.`);
		throw err;
	});
	if (!inserted) throw new Error(`tenant ${body.id}: the insert returned no row`);
	forgetTenant(inserted.id); // an earlier "no such tenant" may be cached in this isolate
	return c.json(tenantBody(inserted), 201);
};

export const getTenant: H<typeof routes.getTenant> = async (c) => {
	const { tenantId } = c.req.valid("param");
	assertTenantAccess(c, tenantId);
	return c.json(tenantBody(await loadTenant(c, tenantId)), 200);
};

// Operator only: the route declares requireOperator().
export const updateTenant: H<typeof routes.updateTenant> = async (c) => {
	const { tenantId } = c.req.valid("param");
	const body = c.req.valid("json");
	const before = await loadTenant(c, tenantId);
	const changes: Record<string, unknown> = {};
	for (const field of ["name", "tier", "status", "limits"] as const) {
		if (field in body) changes[field] = { from: before[field] ?? null, to: body[field] ?? null };
	}
	const action =
		body.status && body.status !== before.status
			? body.status === "suspended"
				? "tenant.suspend"
				: "tenant.resume"
			: body.tier && body.tier !== before.tier
				? "tenant.tier.change"
				: "tenant.update";
	const updatedAt = Date.now();
	// Tenants are never deleted, so the row loaded above is still there for the update to match.
	// Setting the same values again is harmless if the batch is retried.
	const [[updated]] = await commitWithAudit(
		c.env.DB,
		auditOf(c, tenantId, action, `tenant:${tenantId}`, changes),
		(db) => [
			db
				.update(tenants)
				.set({ ...body, updatedAt })
				.where(eq(tenants.id, tenantId))
				.returning(),
		],
	);
	if (!updated) throw new ApiError("not-found", "No such tenant.");
	forgetTenant(tenantId);
	return c.json(tenantBody(updated), 200);
};

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
	const id = newId("key", 16);
	const scopes = [...new Set(body.scopes)];
	// If the audit record cannot be written, no key exists either: never a live key whose secret was lost.
	// A retried batch inserts the same id again, the first insert having rolled back.
	const audit = auditOf(c, tenantId, "api_key.create", `api_key:${id}`, { name: body.name, scopes });
	const [[row]] = await commitWithAudit(c.env.DB, audit, (db) => [
		db
			.insert(apiKeys)
			.values({
				id,
				tenantId,
				name: body.name,
				prefix: secret.prefix,
				hash: secret.hash,
				scopes,
				tier: body.tier ?? null,
				limits: body.limits ?? null,
				expiresAt: body.expiresAt ?? null,
			})
			.returning(),
	]);
	if (!row) throw new Error(`api key ${id}: the insert returned no row`);
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
	const revokedAt = Date.now();
	// Keys are never deleted, so the row read above is still there for the update to match.
	const [[revoked]] = await commitWithAudit(
		c.env.DB,
		auditOf(c, tenantId, "api_key.revoke", `api_key:${keyId}`),
		(db) => [
			db
				.update(apiKeys)
				.set({ revokedAt })
				.where(and(eq(apiKeys.id, keyId), eq(apiKeys.tenantId, tenantId)))
				.returning(),
		],
	);
	if (!revoked) throw new ApiError("not-found", "No such key.");
	forgetKey(revoked.prefix);
	return c.json(keyBody(revoked), 200);
};
