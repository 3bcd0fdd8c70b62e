/**
 * The shared security suite. Every protected route group runs it: no credentials → 401, every kind
 * of bad token → 401, revoked key → 401, suspended tenant → 403, missing scope → 403, over the
 * limit → 429 with headers.
 */

import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { base64url, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { createApp } from "../../src/app";
import type { Scope } from "../../src/config";
import { database, tenants } from "../../src/db";
import { call, expectProblem } from "./gateway";
import { hsToken, idpPublicJwk, idpToken, seedKey, seedTenant, serveJwks } from "./identity";

export interface ProtectedRoute {
	/** The route group's name in test titles. */
	group: string;
	scope: Scope;
	/** A request that succeeds for a caller of `tenantId` holding `scope`. */
	request: (tenantId: string) => { path: string; init?: RequestInit };
	/** Status of the successful request. */
	okStatus: number;
}

function send(route: ProtectedRoute, tenantId: string, auth: { token?: string; apiKey?: string }) {
	const { path, init } = route.request(tenantId);
	return call(path, { ...init, ...auth });
}

async function expectUnauthenticated(res: Response) {
	const body = await expectProblem(res, 401, "invalid-token");
	expect(res.headers.get("www-authenticate")).toMatch(/^Bearer realm="edgeway"/);
	// Deliberately vague: no reason leaks to the client.
	expect(body.detail).toMatch(/^(Authentication is required|The access token is invalid)\.$/);
}

export function securitySuite(route: ProtectedRoute) {
	describe(`security: ${route.group}`, () => {
		it("returns 401 with a Bearer challenge without credentials", async () => {
			const tenantId = await seedTenant();
			await expectUnauthenticated(await send(route, tenantId, {}));
		});

		it("succeeds with a valid token (control)", async () => {
			const tenantId = await seedTenant();
			const res = await send(route, tenantId, { token: await hsToken({ tenantId, scopes: [route.scope] }) });
			expect(res.status).toBe(route.okStatus);
		});

		it("returns 401 for a bad signature, expiry, alg none, key confusion, wrong aud and wrong iss", async () => {
			await serveJwks();
			const tenantId = await seedTenant();
			const scopes = [route.scope];
			const now = Math.floor(Date.now() / 1000);
			const none = `${base64url.encode(JSON.stringify({ alg: "none" }))}.${base64url.encode(
				JSON.stringify({
					sub: "x",
					tid: tenantId,
					scope: route.scope,
					iss: env.JWT_ISSUER,
					aud: env.JWT_AUDIENCE,
					exp: now + 60,
				}),
			)}.`;
			const confused = await new SignJWT({ tid: tenantId, scope: route.scope })
				.setProtectedHeader({ alg: "HS256" })
				.setSubject("mallory")
				.setIssuer(env.JWT_ISSUER)
				.setAudience(env.JWT_AUDIENCE)
				.setExpirationTime(now + 60)
				.sign(new TextEncoder().encode(JSON.stringify(await idpPublicJwk("RS256"))));
			const bad = {
				"bad signature": await hsToken({ tenantId, scopes }, "wrong-secret-wrong-secret-wrong-secret-00"),
				expired: await hsToken({ tenantId, scopes, expiresIn: -3600 }),
				"alg none": none,
				"HS256 signed with the RS public key": confused,
				"wrong aud": await idpToken("RS256", { tenantId, scopes, audience: "not-edgeway" }),
				"wrong iss": await idpToken("ES256", { tenantId, scopes, issuer: "https://evil.example" }),
				garbage: "abc.def.ghi",
			};
			for (const [name, token] of Object.entries(bad)) {
				const res = await send(route, tenantId, { token });
				expect(res.status, name).toBe(401);
				await expectUnauthenticated(res);
			}
		});

		it("refuses HS256 outright where no HS256 secret is configured (production), even signed with the IdP's key", async () => {
			await serveJwks();
			const tenantId = await seedTenant();
			const now = Math.floor(Date.now() / 1000);
			const confused = await new SignJWT({ tid: tenantId, scope: route.scope })
				.setProtectedHeader({ alg: "HS256" })
				.setSubject("mallory")
				.setIssuer(env.JWT_ISSUER)
				.setAudience(env.JWT_AUDIENCE)
				.setExpirationTime(now + 60)
				.sign(new TextEncoder().encode(JSON.stringify(await idpPublicJwk("RS256"))));
			const production = { ...env, JWT_HS256_SECRET: undefined };
			const { path, init } = route.request(tenantId);
			const headers = new Headers(init?.headers);
			headers.set("authorization", `Bearer ${confused}`);
			const res = await createApp().request(path, { ...init, headers }, production);
			await expectUnauthenticated(res);
			// The same app accepts the IdP's real RS256 token.
			headers.set("authorization", `Bearer ${await idpToken("RS256", { tenantId, scopes: [route.scope] })}`);
			const ok = await createApp().request(path, { ...init, headers }, production);
			expect(ok.status).toBe(route.okStatus);
		});

		it("returns 401 for an unknown, revoked or expired API key", async () => {
			const tenantId = await seedTenant();
			const revoked = await seedKey(tenantId, { scopes: [route.scope], revokedAt: Date.now() - 1000 });
			const expired = await seedKey(tenantId, { scopes: [route.scope], expiresAt: Date.now() - 1000 });
			const valid = await seedKey(tenantId, { scopes: [route.scope] });
			const wrongSecret = `${valid.prefix}_${"0".repeat(64)}`;
			for (const apiKey of [revoked.key, expired.key, wrongSecret, `ew_unknownunkno_${"1".repeat(64)}`]) {
				await expectUnauthenticated(await send(route, tenantId, { apiKey }));
			}
			expect((await send(route, tenantId, { apiKey: valid.key })).status).toBe(route.okStatus);
		});

		it("returns 403 for a suspended tenant even with a valid token", async () => {
			const tenantId = await seedTenant({ status: "suspended" });
			const res = await send(route, tenantId, { token: await hsToken({ tenantId, scopes: [route.scope] }) });
			await expectProblem(res, 403, "tenant-suspended");
		});

		it("returns 403 without the route group's scope", async () => {
			const tenantId = await seedTenant();
			const other: Scope = route.scope === "files" ? "llm" : "files";
			const res = await send(route, tenantId, { token: await hsToken({ tenantId, scopes: [other] }) });
			await expectProblem(res, 403, "insufficient-scope");
			expect(res.headers.get("www-authenticate")).toContain('error="insufficient_scope"');
		});

		it("returns 429 with Retry-After and RateLimit headers over the limit", async () => {
			const tenantId = await seedTenant({ limits: { rate: { perSecond: 0.01, burst: 3 } } });
			const token = await hsToken({ tenantId, scopes: [route.scope] });
			const statuses: number[] = [];
			let limited: Response | undefined;
			for (let i = 0; i < 5; i++) {
				const res = await send(route, tenantId, { token });
				statuses.push(res.status);
				if (res.status === 429) limited = res;
				else await res.arrayBuffer();
			}
			expect(statuses).toEqual([route.okStatus, route.okStatus, route.okStatus, 429, 429]);
			if (!limited) throw new Error("no 429");
			expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
			expect(limited.headers.get("ratelimit-policy")).toContain('"burst";q=3;w=300');
			expect(limited.headers.get("ratelimit")).toMatch(/"burst";r=0;t=\d+/);
			await expectProblem(limited, 429, "rate-limited");
		});

		it("refuses a tenant that does not exist", async () => {
			const res = await send(route, "ghost", { token: await hsToken({ tenantId: "ghost", scopes: [route.scope] }) });
			await expectUnauthenticated(res);
		});

		it("sees a suspension made after the token was issued", async () => {
			const tenantId = await seedTenant();
			const token = await hsToken({ tenantId, scopes: [route.scope] });
			expect((await send(route, tenantId, { token })).status).toBe(route.okStatus);
			await database(env.DB).update(tenants).set({ status: "suspended" }).where(eq(tenants.id, tenantId)).run();
			// The tenant view is cached for a few seconds; this isolate's copy is dropped here the way the admin API does.
			const { forgetTenant } = await import("../../src/auth");
			forgetTenant(tenantId);
			await expectProblem(await send(route, tenantId, { token }), 403, "tenant-suspended");
		});
	});
}
