/** The admin API: happy paths, errors and tenant separation; every mutation audited. */
import { env } from "cloudflare:workers";
import { and, asc, eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { verifyAudit } from "../../src/audit";
import { apiKeys, auditLog, database, tenants } from "../../src/db";
import { call, expectProblem, json } from "../helpers/gateway";
import { hsToken, operatorToken, seedKey, seedTenant } from "../helpers/identity";

async function auditFor(tenantId: string) {
	return database(env.DB)
		.select()
		.from(auditLog)
		.where(eq(auditLog.tenantId, tenantId))
		.orderBy(asc(auditLog.id))
		.all();
}

async function tenantRow(id: string) {
	return database(env.DB).select().from(tenants).where(eq(tenants.id, id)).get();
}

/**
 * Runs `fn` while the database refuses every audit insert (a temporary trigger, like the append-only
 * ones of migrations/0001), so a handler's audit write fails after its mutation statement succeeded.
 */
async function whileAuditRefused<T>(fn: () => Promise<T>): Promise<T> {
	await env.DB.prepare(
		"CREATE TRIGGER test_audit_log_refuse_insert BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log refuses inserts in this test'); END",
	).run();
	try {
		return await fn();
	} finally {
		await env.DB.prepare("DROP TRIGGER test_audit_log_refuse_insert").run();
	}
}

/** The generic 500 problem, which says nothing of the database's message. */
async function expectInternalProblem(res: Response) {
	const problem = await expectProblem(res, 500, "internal");
	expect(problem.detail).toBe("An unexpected error occurred.");
	expect(JSON.stringify(problem)).not.toContain("audit_log");
}

describe("admin: tenants", () => {
	it("creates, reads, changes the tier of, suspends and resumes a tenant, auditing each step", async () => {
		const token = await operatorToken({ sub: "ops" });
		const created = await call("/v1/admin/tenants", {
			...json("POST", { id: "acme-1", name: "Acme", tier: "free" }),
			token,
		});
		expect(created.status).toBe(201);
		expect(await created.json()).toMatchObject({
			id: "acme-1",
			name: "Acme",
			tier: "free",
			status: "active",
			limits: null,
		});

		const read = await call("/v1/admin/tenants/acme-1", { token });
		expect(read.status).toBe(200);

		const upgraded = await call("/v1/admin/tenants/acme-1", { ...json("PATCH", { tier: "pro" }), token });
		expect(await upgraded.json()).toMatchObject({ tier: "pro" });
		const suspended = await call("/v1/admin/tenants/acme-1", { ...json("PATCH", { status: "suspended" }), token });
		expect(await suspended.json()).toMatchObject({ status: "suspended" });
		const resumed = await call("/v1/admin/tenants/acme-1", {
			...json("PATCH", { status: "active", limits: { monthlyQuota: 5 } }),
			token,
		});
		expect(await resumed.json()).toMatchObject({ status: "active", limits: { monthlyQuota: 5 } });

		const records = await auditFor("acme-1");
		expect(records.map((r) => r.action)).toEqual([
			"tenant.create",
			"tenant.tier.change",
			"tenant.suspend",
			"tenant.resume",
		]);
		for (const r of records) {
			expect(r.actor).toBe("jwt:ops");
			expect(r.target).toBe("tenant:acme-1");
			expect(r.requestId).toMatch(/.{8,}/);
		}
		expect(records[1]?.metadata).toEqual({ tier: { from: "free", to: "pro" } });
		// Chained: seq 1..4, each record pointing at the previous one's hash.
		expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
		expect(records.map((r) => r.prevHash)).toEqual(["", ...records.slice(0, 3).map((r) => r.hash)]);
		expect(await verifyAudit(env.DB, "acme-1")).toMatchObject({ ok: true, records: 4 });
	});

	it("takes a suspension into account on the tenant's next request", async () => {
		const token = await operatorToken({ sub: "ops" });
		const tenantId = await seedTenant();
		const userToken = await hsToken({ tenantId, scopes: ["api:read"] });
		expect((await call("/v1/me", { token: userToken })).status).toBe(200);
		await call(`/v1/admin/tenants/${tenantId}`, { ...json("PATCH", { status: "suspended" }), token });
		await expectProblem(await call("/v1/me", { token: userToken }), 403, "tenant-suspended");
	});

	it("answers 409 for an existing id and 400 with field paths for a bad body", async () => {
		const token = await operatorToken({ sub: "ops" });
		const first = await call("/v1/admin/tenants", {
			...json("POST", { id: "dup-1", name: "Dup", tier: "free" }),
			token,
		});
		expect(first.status).toBe(201);
		await expectProblem(
			await call("/v1/admin/tenants", { ...json("POST", { id: "dup-1", name: "Other", tier: "pro" }), token }),
			409,
			"conflict",
		);
		expect(await tenantRow("dup-1")).toMatchObject({ name: "Dup", tier: "free" });
		expect((await auditFor("dup-1")).map((r) => r.action)).toEqual(["tenant.create"]);
		const bad = await expectProblem(
			await call("/v1/admin/tenants", {
				...json("POST", { id: "Not Valid!", name: "", tier: "platinum", extra: 1 }),
				token,
			}),
			400,
			"validation-failed",
		);
		const paths = bad.errors?.map((e) => e.path) ?? [];
		expect(paths).toEqual(expect.arrayContaining(["json.id", "json.name", "json.tier"]));
		await expectProblem(
			await call("/v1/admin/tenants/nobody-here", { ...json("PATCH", { tier: "pro" }), token }),
			404,
			"not-found",
		);
		await expectProblem(
			await call("/v1/admin/tenants/acme-x", { ...json("PATCH", {}), token }),
			400,
			"validation-failed",
		);
	});

	it("lets only the operator create or change tenants", async () => {
		const tenantId = await seedTenant({ tier: "enterprise" });
		const token = await hsToken({ tenantId, scopes: ["admin"] });
		await expectProblem(
			await call("/v1/admin/tenants", { ...json("POST", { id: "sneaky", name: "S", tier: "enterprise" }), token }),
			403,
			"forbidden",
		);
		await expectProblem(
			await call(`/v1/admin/tenants/${tenantId}`, { ...json("PATCH", { tier: "free" }), token }),
			403,
			"forbidden",
		);
		// The operator guard runs before the body is looked at: no hint about what a valid request would be.
		await expectProblem(
			await call("/v1/admin/tenants", { ...json("POST", { id: "Not Valid!", extra: 1 }), token }),
			403,
			"forbidden",
		);
		expect(await tenantRow("sneaky")).toBeUndefined();
		expect(await tenantRow(tenantId)).toMatchObject({ tier: "enterprise", updatedAt: null });
		expect(await auditFor("sneaky")).toEqual([]);
		expect(await auditFor(tenantId)).toEqual([]);
		// Its own tenant record it may read.
		expect((await call(`/v1/admin/tenants/${tenantId}`, { token })).status).toBe(200);
	});
});

describe("admin: API keys", () => {
	it("creates a key whose secret is shown once and works, lists it without secrets, and revokes it", async () => {
		const tenantId = await seedTenant();
		const token = await hsToken({ tenantId, scopes: ["admin", "api:read"], sub: "owner" });
		const created = await call(`/v1/admin/tenants/${tenantId}/keys`, {
			...json("POST", { name: "ci", scopes: ["api:read"] }),
			token,
		});
		expect(created.status).toBe(201);
		const key = (await created.json()) as { id: string; key: string; prefix: string; scopes: string[] };
		expect(key.key).toMatch(/^ew_[a-z0-9]{12}_[0-9a-f]{64}$/);
		expect(key.key.startsWith(key.prefix)).toBe(true);

		const me = await call("/v1/me", { apiKey: key.key });
		expect(await me.json()).toMatchObject({ tenantId, via: "api-key", actor: `key:${key.id}`, scopes: ["api:read"] });
		const bearer = await call("/v1/me", { token: key.key });
		expect(bearer.status).toBe(200);

		const listed = await call(`/v1/admin/tenants/${tenantId}/keys`, { token });
		const text = await listed.text();
		expect(text).not.toContain(key.key.slice(key.prefix.length + 1));
		expect(text).not.toContain('"hash"');
		expect(JSON.parse(text).keys).toHaveLength(1);

		const stored = await database(env.DB).select().from(apiKeys).where(eq(apiKeys.id, key.id)).get();
		expect(stored?.hash).toMatch(/^[0-9a-f]{64}$/);
		expect(JSON.stringify(stored)).not.toContain(key.key);

		const revoked = await call(`/v1/admin/tenants/${tenantId}/keys/${key.id}`, { method: "DELETE", token });
		expect(await revoked.json()).toMatchObject({ id: key.id, revokedAt: expect.any(Number) });
		await expectProblem(await call("/v1/me", { apiKey: key.key }), 401, "invalid-token");

		const actions = (await auditFor(tenantId)).map((r) => `${r.action} ${r.target} ${r.actor}`);
		expect(actions).toEqual([
			`api_key.create api_key:${key.id} jwt:owner`,
			`api_key.revoke api_key:${key.id} jwt:owner`,
		]);
		expect(JSON.stringify(await auditFor(tenantId))).not.toContain(key.key);
	});

	it("updates last_used_at at most once a minute per isolate, not once per request", async () => {
		const tenantId = await seedTenant();
		const token = await hsToken({ tenantId, scopes: ["admin", "api:read"] });
		const created = await call(`/v1/admin/tenants/${tenantId}/keys`, {
			...json("POST", { name: "k", scopes: ["api:read"] }),
			token,
		});
		const key = (await created.json()) as { id: string; key: string };
		const lastUsed = async () =>
			(await database(env.DB).select({ at: apiKeys.lastUsedAt }).from(apiKeys).where(eq(apiKeys.id, key.id)).get())?.at;
		expect(await lastUsed()).toBeNull();
		expect((await call("/v1/me", { apiKey: key.key })).status).toBe(200);
		await expect.poll(lastUsed, { timeout: 15_000 }).toEqual(expect.any(Number));
		const first = await lastUsed();
		for (let i = 0; i < 5; i++) expect((await call("/v1/me", { apiKey: key.key })).status).toBe(200);
		expect(await lastUsed()).toBe(first);
	});

	it("refuses to mint a key with scopes the caller does not hold, or an expiry in the past", async () => {
		const tenantId = await seedTenant();
		const token = await hsToken({ tenantId, scopes: ["admin"] });
		await expectProblem(
			await call(`/v1/admin/tenants/${tenantId}/keys`, { ...json("POST", { name: "x", scopes: ["llm"] }), token }),
			403,
			"insufficient-scope",
		);
		await expectProblem(
			await call(`/v1/admin/tenants/${tenantId}/keys`, {
				...json("POST", { name: "x", scopes: ["admin"], expiresAt: Date.now() - 1 }),
				token,
			}),
			400,
			"validation-failed",
		);
	});

	it("keeps tenants apart: A cannot list, create or revoke B's keys, and cannot tell B exists", async () => {
		const a = await seedTenant();
		const b = await seedTenant();
		const tokenA = await hsToken({ tenantId: a, scopes: ["admin", "api:read"] });
		const tokenB = await hsToken({ tenantId: b, scopes: ["admin", "api:read"] });
		const created = await call(`/v1/admin/tenants/${b}/keys`, {
			...json("POST", { name: "b", scopes: ["api:read"] }),
			token: tokenB,
		});
		const keyB = (await created.json()) as { id: string; key: string };

		await expectProblem(await call(`/v1/admin/tenants/${b}/keys`, { token: tokenA }), 404, "not-found");
		await expectProblem(
			await call(`/v1/admin/tenants/${b}/keys`, {
				...json("POST", { name: "a", scopes: ["api:read"] }),
				token: tokenA,
			}),
			404,
			"not-found",
		);
		await expectProblem(
			await call(`/v1/admin/tenants/${b}/keys/${keyB.id}`, { method: "DELETE", token: tokenA }),
			404,
			"not-found",
		);
		// Through its own tenant path, A cannot reach B's key id either.
		await expectProblem(
			await call(`/v1/admin/tenants/${a}/keys/${keyB.id}`, { method: "DELETE", token: tokenA }),
			404,
			"not-found",
		);
		await expectProblem(await call(`/v1/admin/tenants/${b}`, { token: tokenA }), 404, "not-found");
		await expectProblem(await call("/v1/admin/tenants/does-not-exist", { token: tokenA }), 404, "not-found");

		const stillThere = await database(env.DB)
			.select()
			.from(apiKeys)
			.where(and(eq(apiKeys.id, keyB.id), eq(apiKeys.tenantId, b)))
			.get();
		expect(stillThere?.revokedAt).toBeNull();
		expect((await call("/v1/me", { apiKey: keyB.key })).status).toBe(200);
	});

	it("lets the operator manage any tenant's keys", async () => {
		const token = await operatorToken({ sub: "ops" });
		const tenantId = await seedTenant();
		const created = await call(`/v1/admin/tenants/${tenantId}/keys`, {
			...json("POST", { name: "ops", scopes: ["llm"] }),
			token,
		});
		expect(created.status).toBe(201);
		const listed = (await (await call(`/v1/admin/tenants/${tenantId}/keys`, { token })).json()) as { keys: unknown[] };
		expect(listed.keys).toHaveLength(1);
	});
});

describe("admin: a mutation and its audit record commit together or not at all", () => {
	it("does not create a tenant whose creation cannot be audited", async () => {
		const token = await operatorToken({ sub: "ops" });
		const res = await whileAuditRefused(() =>
			call("/v1/admin/tenants", { ...json("POST", { id: "unaudited-1", name: "U", tier: "free" }), token }),
		);
		await expectInternalProblem(res);
		expect(await tenantRow("unaudited-1")).toBeUndefined();
		expect(await auditFor("unaudited-1")).toEqual([]);
		// Nothing half-done is left behind: the same request succeeds once audit writes work again.
		const retried = await call("/v1/admin/tenants", {
			...json("POST", { id: "unaudited-1", name: "U", tier: "free" }),
			token,
		});
		expect(retried.status).toBe(201);
		const records = await auditFor("unaudited-1");
		expect(records.map((r) => r.action)).toEqual(["tenant.create"]);
		// The refused attempt took no place in the chain.
		expect(records[0]).toMatchObject({ seq: 1, prevHash: "" });
	});

	it("does not change a tenant when the change cannot be audited", async () => {
		const token = await operatorToken({ sub: "ops" });
		const tenantId = await seedTenant({ tier: "free" });
		const res = await whileAuditRefused(() =>
			call(`/v1/admin/tenants/${tenantId}`, { ...json("PATCH", { tier: "pro", status: "suspended" }), token }),
		);
		await expectInternalProblem(res);
		expect(await tenantRow(tenantId)).toMatchObject({ tier: "free", status: "active", updatedAt: null });
		expect(await auditFor(tenantId)).toEqual([]);
		expect((await call("/v1/me", { token: await hsToken({ tenantId }) })).status).toBe(200);
	});

	it("does not create a key whose creation cannot be audited, so no secret is lost with a live key", async () => {
		const tenantId = await seedTenant();
		const token = await hsToken({ tenantId, scopes: ["admin", "api:read"] });
		const res = await whileAuditRefused(() =>
			call(`/v1/admin/tenants/${tenantId}/keys`, { ...json("POST", { name: "ci", scopes: ["api:read"] }), token }),
		);
		await expectInternalProblem(res);
		expect(await database(env.DB).select().from(apiKeys).where(eq(apiKeys.tenantId, tenantId)).all()).toEqual([]);
		expect(await auditFor(tenantId)).toEqual([]);
	});

	it("keeps one unbroken chain when a tenant's admins create and revoke keys concurrently", async () => {
		const tenantId = await seedTenant();
		const token = await hsToken({ tenantId, scopes: ["admin", "api:read"] });
		const created = await Promise.all(
			Array.from({ length: 12 }, (_, i) =>
				call(`/v1/admin/tenants/${tenantId}/keys`, { ...json("POST", { name: `k${i}`, scopes: ["api:read"] }), token }),
			),
		);
		expect(created.map((r) => r.status)).toEqual(Array(12).fill(201));
		const ids = await Promise.all(created.map(async (r) => ((await r.json()) as { id: string }).id));
		const revoked = await Promise.all(
			ids.slice(0, 6).map((id) => call(`/v1/admin/tenants/${tenantId}/keys/${id}`, { method: "DELETE", token })),
		);
		expect(revoked.map((r) => r.status)).toEqual(Array(6).fill(200));
		const records = await auditFor(tenantId);
		expect(records.filter((r) => r.action === "api_key.create")).toHaveLength(12);
		expect(records.filter((r) => r.action === "api_key.revoke")).toHaveLength(6);
		expect(records.map((r) => r.seq).sort((x, y) => (x ?? 0) - (y ?? 0))).toEqual(
			Array.from({ length: 18 }, (_, i) => i + 1),
		);
		expect(await verifyAudit(env.DB, tenantId)).toMatchObject({ ok: true, records: 18 });
	});

	it("does not revoke a key when the revocation cannot be audited", async () => {
		const tenantId = await seedTenant();
		const token = await hsToken({ tenantId, scopes: ["admin", "api:read"] });
		const key = await seedKey(tenantId);
		const res = await whileAuditRefused(() =>
			call(`/v1/admin/tenants/${tenantId}/keys/${key.id}`, { method: "DELETE", token }),
		);
		await expectInternalProblem(res);
		const stored = await database(env.DB).select().from(apiKeys).where(eq(apiKeys.id, key.id)).get();
		expect(stored?.revokedAt).toBeNull();
		expect(await auditFor(tenantId)).toEqual([]);
		expect((await call("/v1/me", { apiKey: key.key })).status).toBe(200);
	});
});

describe("tiers and per-key limits", () => {
	it("lets a credential narrow the tenant's tier but never widen it", async () => {
		const tenantId = await seedTenant({ tier: "pro" });
		const narrowed = await call("/v1/me", { token: await hsToken({ tenantId, tier: "free" }) });
		expect(await narrowed.json()).toMatchObject({ tier: "free" });
		const widened = await call("/v1/me", { token: await hsToken({ tenantId, tier: "enterprise" }) });
		expect(await widened.json()).toMatchObject({ tier: "pro" });
	});

	it("enforces a key's own limit on top of the tenant's", async () => {
		const tenantId = await seedTenant({ tier: "enterprise" });
		const token = await hsToken({ tenantId, scopes: ["admin", "api:read"] });
		const created = await call(`/v1/admin/tenants/${tenantId}/keys`, {
			...json("POST", { name: "tight", scopes: ["api:read"], limits: { rate: { perSecond: 0.01, burst: 2 } } }),
			token,
		});
		const key = (await created.json()) as { key: string };
		const statuses: number[] = [];
		for (let i = 0; i < 4; i++) statuses.push((await call("/v1/me", { apiKey: key.key })).status);
		expect(statuses).toEqual([200, 200, 429, 429]);
		const limited = await call("/v1/me", { apiKey: key.key });
		expect(limited.headers.get("ratelimit-policy")).toContain('"key-burst";q=2');
		// The tenant's own bucket is untouched by the key's refusals.
		expect((await call("/v1/me", { token })).status).toBe(200);
	});
});

describe("admin: provider keys", () => {
	it("answers 404 when the operator stores a key for a tenant that does not exist (was a 500 from the foreign key)", async () => {
		const token = await operatorToken({ sub: "ops" });
		const res = await call("/v1/admin/tenants/no-such-tenant/provider-keys/openai", {
			...json("PUT", { key: "sk-test-0123456789abcdef" }),
			token,
		});
		await expectProblem(res, 404, "not-found");
		const listed = await call("/v1/admin/tenants/no-such-tenant/provider-keys", { token });
		expect(await listed.json()).toEqual({ keys: [] });
	});
});
