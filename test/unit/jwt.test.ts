/** verifyJwt: per-source algorithm allow-lists, required claims, clock tolerance, and the verified-token cache. */
import { env } from "cloudflare:workers";
import { base64url, SignJWT } from "jose";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { clearJwtCache, type JwtConfig, verifyJwt } from "../../src/auth";
import { hsToken, idpPublicJwk, idpToken, serveJwks } from "../helpers/identity";

const config: JwtConfig = {
	issuer: env.JWT_ISSUER,
	audience: env.JWT_AUDIENCE,
	clockToleranceS: 30,
	hs256Secret: env.JWT_HS256_SECRET,
	jwksUrl: env.JWKS_URL,
};

let jwks: Awaited<ReturnType<typeof serveJwks>>;
beforeAll(async () => {
	jwks = await serveJwks();
});
afterEach(() => clearJwtCache());

const reason = async (token: string, cfg = config) => {
	const r = await verifyJwt(token, cfg);
	return r.ok ? "ok" : r.reason;
};

describe("verifyJwt", () => {
	it("accepts an HS256 token and reads sub, tenant, tier and scopes", async () => {
		const token = await hsToken({ tenantId: "acme", tier: "pro", scopes: "api:read llm bogus", sub: "alice" });
		const result = await verifyJwt(token, config);
		expect(result).toMatchObject({
			ok: true,
			value: { sub: "alice", tenantId: "acme", tier: "pro", scopes: ["api:read", "llm"] },
		});
	});

	for (const alg of ["RS256", "ES256", "EdDSA"] as const) {
		it(`accepts ${alg} through the JWKS`, async () => {
			expect(await reason(await idpToken(alg, { tenantId: "acme" }))).toBe("ok");
		});
	}

	it("fetches the JWKS once and reuses it", async () => {
		const before = jwks.requests();
		for (const alg of ["RS256", "ES256", "EdDSA"] as const) {
			expect(await reason(await idpToken(alg, { tenantId: "acme", sub: `again-${alg}` }))).toBe("ok");
		}
		expect(jwks.requests() - before).toBe(0);
	});

	it("refuses a bad signature", async () => {
		const token = await hsToken({ tenantId: "acme" }, "another-secret-another-secret-another-secret");
		expect(await reason(token)).toBe("bad-signature");
	});

	it("refuses alg none", async () => {
		const header = base64url.encode(JSON.stringify({ alg: "none", typ: "JWT" }));
		const now = Math.floor(Date.now() / 1000);
		const payload = base64url.encode(
			JSON.stringify({ sub: "x", tid: "acme", iss: env.JWT_ISSUER, aud: env.JWT_AUDIENCE, exp: now + 60 }),
		);
		expect(await reason(`${header}.${payload}.`)).toBe("alg-not-allowed");
	});

	it("refuses an HS256 token signed with the IdP's RSA public key (key confusion)", async () => {
		const publicJwk = await idpPublicJwk("RS256");
		const now = Math.floor(Date.now() / 1000);
		const forged = await new SignJWT({ tid: "acme", scope: "admin" })
			.setProtectedHeader({ alg: "HS256", kid: publicJwk.kid })
			.setSubject("mallory")
			.setIssuer(env.JWT_ISSUER)
			.setAudience(env.JWT_AUDIENCE)
			.setExpirationTime(now + 60)
			.sign(new TextEncoder().encode(JSON.stringify(publicJwk)));
		expect(await reason(forged)).toBe("bad-signature");
		// With no HS256 secret configured (production), HS256 is not even considered.
		expect(await reason(forged, { ...config, hs256Secret: undefined })).toBe("alg-not-allowed");
	});

	it("refuses an RS256 token when no JWKS is configured", async () => {
		expect(await reason(await idpToken("RS256", { tenantId: "acme" }), { ...config, jwksUrl: undefined })).toBe(
			"alg-not-allowed",
		);
	});

	it("refuses expired tokens, honouring the clock tolerance", async () => {
		expect(await reason(await hsToken({ tenantId: "acme", expiresIn: -120 }))).toBe("expired");
		expect(await reason(await hsToken({ tenantId: "acme", expiresIn: -10 }))).toBe("ok");
		expect(await reason(await hsToken({ tenantId: "acme", expiresIn: -10 }), { ...config, clockToleranceS: 0 })).toBe(
			"expired",
		);
	});

	it("honours nbf", async () => {
		expect(await reason(await hsToken({ tenantId: "acme", notBefore: 300 }))).toBe("not-yet-valid");
		expect(await reason(await hsToken({ tenantId: "acme", notBefore: 10 }))).toBe("ok");
	});

	it("refuses the wrong audience or issuer", async () => {
		expect(await reason(await hsToken({ tenantId: "acme", audience: "someone-else" }))).toBe("aud-mismatch");
		expect(await reason(await hsToken({ tenantId: "acme", issuer: "https://evil.example" }))).toBe("iss-mismatch");
	});

	it("requires exp, sub and the tenant claim", async () => {
		const key = new TextEncoder().encode(env.JWT_HS256_SECRET);
		const base = () =>
			new SignJWT({ tid: "acme" })
				.setProtectedHeader({ alg: "HS256" })
				.setIssuer(env.JWT_ISSUER)
				.setAudience(env.JWT_AUDIENCE);
		expect(await reason(await base().setSubject("a").sign(key))).toBe("missing-claim");
		const exp = Math.floor(Date.now() / 1000) + 60;
		expect(await reason(await base().setExpirationTime(exp).sign(key))).toBe("missing-claim");
		const noTenant = await new SignJWT({})
			.setProtectedHeader({ alg: "HS256" })
			.setIssuer(env.JWT_ISSUER)
			.setAudience(env.JWT_AUDIENCE)
			.setSubject("a")
			.setExpirationTime(exp)
			.sign(key);
		expect(await reason(noTenant)).toBe("missing-claim");
	});

	it("refuses garbage", async () => {
		expect(await reason("not-a-jwt")).toBe("malformed");
		expect(await reason("a.b.c")).toBe("malformed");
	});

	it("answers a token it verified before from its cache, without checking the signature again", async () => {
		const token = await hsToken({ tenantId: "acme", sub: "cached" });
		expect(await reason(token)).toBe("ok");
		const verify = vi.spyOn(crypto.subtle, "verify");
		expect(await reason(token)).toBe("ok");
		expect(verify).not.toHaveBeenCalled();
		verify.mockRestore();
	});
});
