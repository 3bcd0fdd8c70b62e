/** Test identities: tenants and API keys in the real local D1, and JWTs signed as an IdP would. */
import { env } from "cloudflare:workers";
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";
import { generateApiKey } from "../../src/auth";
import type { Limits, Scope, TierName } from "../../src/config";
import { apiKeys, database, tenants } from "../../src/db";
import { answerFetch } from "./upstreams";

let counter = 0;
/** A tenant id unique within the test file. */
export function uniqueId(prefix = "t"): string {
	counter++;
	return `${prefix}-${counter}-${crypto.randomUUID().slice(0, 8)}`;
}

export async function seedTenant(
	options: { id?: string; tier?: TierName; status?: "active" | "suspended"; limits?: Limits } = {},
): Promise<string> {
	const id = options.id ?? uniqueId();
	await database(env.DB)
		.insert(tenants)
		.values({
			id,
			name: `Tenant ${id}`,
			tier: options.tier ?? "pro",
			status: options.status ?? "active",
			limits: options.limits ?? null,
		})
		.run();
	return id;
}

/** Seeds the operator tenant (OPERATOR_TENANT, enterprise) unless it exists; returns its id. */
export async function seedOperator(): Promise<string> {
	await database(env.DB)
		.insert(tenants)
		.values({ id: env.OPERATOR_TENANT, name: `Tenant ${env.OPERATOR_TENANT}`, tier: "enterprise" })
		.onConflictDoNothing()
		.run();
	return env.OPERATOR_TENANT;
}

/** A token of the operator tenant (seeded unless it exists), scope `admin` unless told otherwise. */
export async function operatorToken(options: { scopes?: Scope[]; sub?: string } = {}): Promise<string> {
	const tenantId = await seedOperator();
	return hsToken({ tenantId, scopes: options.scopes ?? ["admin"], sub: options.sub });
}

/** A fresh tenant (see {@link seedTenant}) and a token of it holding `scopes`. */
export async function seedCaller(
	scopes: Scope[],
	options: Parameters<typeof seedTenant>[0] & { sub?: string } = {},
): Promise<{ tenantId: string; token: string }> {
	const { sub, ...tenant } = options;
	const tenantId = await seedTenant(tenant);
	return { tenantId, token: await hsToken({ tenantId, scopes, sub }) };
}

export async function seedKey(
	tenantId: string,
	options: { scopes?: Scope[]; tier?: TierName; limits?: Limits; expiresAt?: number; revokedAt?: number } = {},
): Promise<{ key: string; id: string; prefix: string }> {
	const secret = await generateApiKey();
	const id = `key_${crypto.randomUUID().replace(/-/g, "").slice(0, 16)}`;
	await database(env.DB)
		.insert(apiKeys)
		.values({
			id,
			tenantId,
			name: "test key",
			prefix: secret.prefix,
			hash: secret.hash,
			scopes: options.scopes ?? ["api:read"],
			tier: options.tier ?? null,
			limits: options.limits ?? null,
			expiresAt: options.expiresAt ?? null,
			revokedAt: options.revokedAt ?? null,
		})
		.run();
	return { key: secret.key, id, prefix: secret.prefix };
}

export interface TokenOptions {
	tenantId: string;
	scopes?: Scope[] | string;
	tier?: TierName;
	sub?: string;
	/** Seconds from now; negative for an expired token. */
	expiresIn?: number;
	notBefore?: number;
	issuer?: string;
	audience?: string;
	extra?: JWTPayload;
}

function claims(o: TokenOptions): JWTPayload {
	return {
		tid: o.tenantId,
		...(o.tier ? { tier: o.tier } : {}),
		scope: Array.isArray(o.scopes) ? o.scopes.join(" ") : (o.scopes ?? "api:read"),
		...o.extra,
	};
}

function builder(o: TokenOptions): SignJWT {
	const now = Math.floor(Date.now() / 1000);
	const jwt = new SignJWT(claims(o))
		.setSubject(o.sub ?? "user-1")
		.setIssuer(o.issuer ?? env.JWT_ISSUER)
		.setAudience(o.audience ?? env.JWT_AUDIENCE)
		.setIssuedAt(now)
		.setExpirationTime(now + (o.expiresIn ?? 600));
	if (o.notBefore !== undefined) jwt.setNotBefore(now + o.notBefore);
	return jwt;
}

/** An HS256 token signed with the Worker's development secret. */
export function hsToken(o: TokenOptions, secret = env.JWT_HS256_SECRET ?? ""): Promise<string> {
	return builder(o).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(new TextEncoder().encode(secret));
}

export type AsymmetricAlg = "RS256" | "ES256" | "EdDSA";

interface Signer {
	alg: AsymmetricAlg;
	kid: string;
	privateKey: CryptoKey;
	publicJwk: JWK;
}

const signers = new Map<AsymmetricAlg, Signer>();

async function signer(alg: AsymmetricAlg): Promise<Signer> {
	let s = signers.get(alg);
	if (!s) {
		const { privateKey, publicKey } = await generateKeyPair(alg, {
			extractable: true,
			crv: alg === "EdDSA" ? "Ed25519" : undefined,
		});
		const kid = `${alg.toLowerCase()}-key`;
		s = { alg, kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
		signers.set(alg, s);
	}
	return s;
}

/** A token signed by the test IdP whose keys {@link serveJwks} publishes at JWKS_URL. */
export async function idpToken(alg: AsymmetricAlg, o: TokenOptions): Promise<string> {
	const s = await signer(alg);
	return builder(o).setProtectedHeader({ alg, kid: s.kid, typ: "JWT" }).sign(s.privateKey);
}

/** The IdP's public key, as a JWK, for key-confusion tests. */
export async function idpPublicJwk(alg: AsymmetricAlg): Promise<JWK> {
	return (await signer(alg)).publicJwk;
}

/**
 * Publishes the test IdP's keys at the configured JWKS_URL by answering the Worker's outbound fetch
 * for that one URL (the IdP is the external service that cannot run here); everything else passes through.
 */
export async function serveJwks(): Promise<{ requests: () => number }> {
	const keys = await Promise.all((["RS256", "ES256", "EdDSA"] as const).map(async (a) => (await signer(a)).publicJwk));
	let count = 0;
	answerFetch(env.JWKS_URL, () => {
		count++;
		return Response.json({ keys });
	});
	return { requests: () => count };
}
