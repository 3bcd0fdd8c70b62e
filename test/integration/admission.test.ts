/** Strict admission through the whole Worker: exact under concurrency, quota, headers, and the fail mode. */
import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { and, eq } from "drizzle-orm";
import { describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app";
import { failureRecorderFor } from "../../src/auth";
import { TIERS } from "../../src/config";
import { auditLog, database } from "../../src/db";
import type { Admission } from "../../src/ratelimit";
import { call, expectProblem } from "../helpers/gateway";
import { hsToken, seedKey, seedTenant } from "../helpers/identity";

describe("admission through the Worker", () => {
	it("admits exactly the burst out of 300 concurrent requests", async () => {
		const tenantId = await seedTenant({ tier: "enterprise", limits: { rate: { perSecond: 0.001, burst: 40 } } });
		const token = await hsToken({ tenantId });
		const responses = await Promise.all(Array.from({ length: 300 }, () => call("/v1/me", { token })));
		const statuses = responses.map((r) => r.status);
		expect(statuses.filter((s) => s === 200)).toHaveLength(40);
		expect(statuses.filter((s) => s === 429)).toHaveLength(260);
		const refused = responses.find((r) => r.status === 429);
		expect(refused?.headers.get("retry-after")).toMatch(/^\d+$/);
		await Promise.all(responses.map((r) => r.arrayBuffer()));
	});

	it("admits exactly the monthly quota and then answers quota-exceeded", async () => {
		const tenantId = await seedTenant({ tier: "pro", limits: { monthlyQuota: 25 } });
		const { key } = await seedKey(tenantId, { scopes: ["api:read"] });
		const responses = await Promise.all(Array.from({ length: 120 }, () => call("/v1/me", { apiKey: key })));
		expect(responses.filter((r) => r.status === 200)).toHaveLength(25);
		const refused = responses.find((r) => r.status === 429);
		if (!refused) throw new Error("expected a refusal");
		const body = await expectProblem(refused, 429, "quota-exceeded");
		expect(body.detail).toMatch(/quota/i);
		expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
		expect(refused.headers.get("ratelimit")).toMatch(/"monthly";r=0;t=\d+/);
	});

	it("sends RateLimit headers on admitted requests", async () => {
		const tenantId = await seedTenant({ tier: "pro" });
		const res = await call("/v1/me", { token: await hsToken({ tenantId }) });
		expect(res.status).toBe(200);
		expect(res.headers.get("ratelimit-policy")).toBe('"burst";q=200;w=4, "monthly";q=1000000;w=2592000');
		expect(res.headers.get("ratelimit")).toMatch(/^"burst";r=\d+;t=\d+, "monthly";r=\d+;t=\d+$/);
	});

	it("keeps tenants' buckets apart", async () => {
		const small = await seedTenant({ limits: { rate: { perSecond: 0.001, burst: 1 } } });
		const other = await seedTenant({ limits: { rate: { perSecond: 0.001, burst: 1 } } });
		expect((await call("/v1/me", { token: await hsToken({ tenantId: small }) })).status).toBe(200);
		expect((await call("/v1/me", { token: await hsToken({ tenantId: small }) })).status).toBe(429);
		expect((await call("/v1/me", { token: await hsToken({ tenantId: other }) })).status).toBe(200);
	});

	it("fails closed with 503 when the limiter is unreachable (quota is closed on every tier)", async () => {
		const down: Admission = { take: async () => ({ kind: "unavailable", reason: "simulated outage" }) };
		const app = createApp({ admission: () => down });
		const tenantId = await seedTenant();
		const res = await app.request(
			"/v1/me",
			{ headers: { authorization: `Bearer ${await hsToken({ tenantId })}` } },
			env,
		);
		await expectProblem(res, 503, "limiter-unavailable");
		expect(res.headers.get("retry-after")).toBe("1");
	});

	it("fails open, and logs it, on a tier that prefers availability", async () => {
		const down: Admission = { take: async () => ({ kind: "unavailable", reason: "simulated outage" }) };
		const app = createApp({ admission: () => down });
		const tenantId = await seedTenant({ tier: "free" });
		const saved = TIERS.free.limiterUnavailable;
		TIERS.free.limiterUnavailable = { rate: "open", quota: "open" };
		const warn = vi.spyOn(console, "warn");
		try {
			const res = await app.request(
				"/v1/me",
				{ headers: { authorization: `Bearer ${await hsToken({ tenantId })}` } },
				env,
			);
			expect(res.status).toBe(200);
			expect(res.headers.get("ratelimit")).toBeNull();
			expect(warn.mock.calls.map((c) => String(c[0])).join("\n")).toContain('"failMode":"open"');
		} finally {
			TIERS.free.limiterUnavailable = saved;
			warn.mockRestore();
		}
	});
});

describe("authentication failures in the audit log", () => {
	const failures = (tenantId: string) =>
		database(env.DB)
			.select()
			.from(auditLog)
			.where(and(eq(auditLog.tenantId, tenantId), eq(auditLog.action, "auth.failed")))
			.all();
	const counted = async (tenantId: string) =>
		(await failures(tenantId)).reduce((n, r) => n + (r.metadata as { count: number }).count, 0);
	const claims = (tenantId: string) => (r: { metadata: unknown }) =>
		(r.metadata as { claimedTenants?: Record<string, number> }).claimedTenants?.[tenantId] ?? 0;

	/**
	 * The gateway's app on an environment of its own, so it has a recorder of its own whose window
	 * (25 s, the longest allowed) outlasts the test: nothing closes it but the test's explicit flush,
	 * however slowly a busy machine serves the requests.
	 */
	function ownWindow() {
		const ownEnv: Env = { ...env, AUTH_FAILURE_WINDOW_S: "25" };
		const app = createApp();
		// Its waitUntil is never awaited: the window timer it holds outlives the test on purpose.
		const ctx = createExecutionContext();
		return {
			call: (path: string, headers: Record<string, string>) => app.request(path, { headers }, ownEnv, ctx),
			close: () => failureRecorderFor(ownEnv).flush(),
		};
	}

	it("aggregates a flood of forged tokens into one operator record, never into the claimed tenant's log", async () => {
		const tenantId = await seedTenant();
		const forged = await hsToken({ tenantId }, "not-the-secret-not-the-secret-not-the-secret");
		const gateway = ownWindow();
		const flood = 150;
		const responses = await Promise.all(
			Array.from({ length: flood }, () => gateway.call("/v1/me", { authorization: `Bearer ${forged}` })),
		);
		expect(responses.every((r) => r.status === 401)).toBe(true);
		// Counted in memory: not one write while the window is open.
		const claiming = async () => (await failures(env.OPERATOR_TENANT)).filter((r) => claims(tenantId)(r) > 0);
		expect(await claiming()).toEqual([]);
		await gateway.close();
		const written = await claiming();
		expect(written).toHaveLength(1);
		expect(written[0]?.metadata).toMatchObject({
			count: flood,
			reasons: { "bad-signature": flood },
			claimedTenants: { [tenantId]: flood },
		});
		expect(await failures(tenantId)).toEqual([]);
		expect(JSON.stringify(written)).not.toContain(forged);
	});

	it("records verified failures (a known key with a wrong secret, an expired token) under their own tenant", async () => {
		const gateway = ownWindow();
		const tenants = await Promise.all(Array.from({ length: 20 }, () => seedTenant()));
		const keys = await Promise.all(tenants.map((t) => seedKey(t)));
		const wrong = await Promise.all(
			keys.map((k) => gateway.call("/v1/me", { "x-api-key": `${k.prefix}_${"0".repeat(64)}` })),
		);
		expect(wrong.every((r) => r.status === 401)).toBe(true);
		const expired = await hsToken({ tenantId: tenants[0] as string, expiresIn: -3600 });
		expect((await gateway.call("/v1/me", { authorization: `Bearer ${expired}` })).status).toBe(401);
		// Twenty tenants in one window: more rows than one D1 statement can bind, written in one batch.
		await gateway.close();
		for (const t of tenants.slice(1)) {
			const records = await failures(t);
			expect(records).toHaveLength(1);
			expect(records[0]?.metadata).toMatchObject({ count: 1, reasons: { "bad-secret": 1 } });
		}
		const first = await failures(tenants[0] as string);
		expect(first).toHaveLength(1);
		expect(first[0]?.metadata).toMatchObject({ count: 2, reasons: { "bad-secret": 1, expired: 1 } });
	});

	it("writes a window through the Worker once it closes on its own, kept alive by the request's waitUntil", async () => {
		// The Worker's own recorder and its 0.2 s window: how many windows a flood spans depends on how
		// fast the machine serves it, so this asserts what does not — every failure is written, once,
		// under the operator, and nothing under the tenant the tokens claim.
		const tenantId = await seedTenant();
		const forged = await hsToken({ tenantId }, "not-the-secret-not-the-secret-not-the-secret");
		const before = await counted(env.OPERATOR_TENANT);
		const flood = 30;
		const responses = await Promise.all(Array.from({ length: flood }, () => call("/v1/me", { token: forged })));
		expect(responses.every((r) => r.status === 401)).toBe(true);
		await expect.poll(() => counted(env.OPERATOR_TENANT), { timeout: 15_000 }).toBe(before + flood);
		const written = (await failures(env.OPERATOR_TENANT)).filter((r) => claims(tenantId)(r) > 0);
		expect(written.reduce((n, r) => n + claims(tenantId)(r), 0)).toBe(flood);
		expect(await failures(tenantId)).toEqual([]);
	});
});
