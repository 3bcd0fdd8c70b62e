/**
 * JWT verification with jose. Each key source has its own algorithm allow-list, chosen by the
 * token's `alg` before any key is touched, so `alg: none` and HS/RS confusion cannot pass:
 * an HS256 token is only ever checked against the HS256 secret, an RS/ES/EdDSA token only against the JWKS.
 */
import { createRemoteJWKSet, decodeProtectedHeader, errors, type JWTPayload, jwtVerify } from "jose";
import { z } from "zod";
import { parseScopes, type Scope, type TierName, TierNameSchema } from "../config";
import { fromBase64Text, sha256Hex, TtlLru } from "../lib";
import type { AuthFailureReason, AuthResult } from "./principal";

export const HMAC_ALGORITHMS = ["HS256"] as const;
export const JWKS_ALGORITHMS = ["RS256", "ES256", "EdDSA", "Ed25519"] as const;

export interface JwtConfig {
	issuer: string;
	audience: string;
	clockToleranceS: number;
	hs256Secret: string | undefined;
	jwksUrl: string | undefined;
}

/** The claims Edgeway reads from a verified token. */
export interface VerifiedClaims {
	sub: string;
	tenantId: string;
	tier: TierName | undefined;
	scopes: Scope[];
	/** Seconds since the epoch. */
	exp: number;
}

const ClaimsSchema = z.object({
	sub: z.string().min(1).max(256),
	tid: z.string().min(1).max(128),
	tier: TierNameSchema.optional(),
	scope: z.union([z.string().max(2048), z.array(z.string()).max(64)]).optional(),
	exp: z.number(),
});

const encoder = new TextEncoder();
const secretKeys = new Map<string, Uint8Array>();
const jwksSets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();

function secretKey(secret: string): Uint8Array {
	let key = secretKeys.get(secret);
	if (!key) {
		key = encoder.encode(secret);
		secretKeys.set(secret, key);
	}
	return key;
}

/** One cached remote key set per URL per isolate: keys are fetched once and refreshed on unknown `kid`. */
function jwks(url: string) {
	let set = jwksSets.get(url);
	if (!set) {
		set = createRemoteJWKSet(new URL(url), {
			cacheMaxAge: 10 * 60 * 1000,
			cooldownDuration: 30 * 1000,
			timeoutDuration: 5000,
		});
		jwksSets.set(url, set);
	}
	return set;
}

function reasonFor(err: unknown): AuthFailureReason {
	if (err instanceof errors.JWTExpired) return "expired";
	if (err instanceof errors.JWTClaimValidationFailed) {
		if (err.reason === "missing") return "missing-claim";
		if (err.claim === "iss") return "iss-mismatch";
		if (err.claim === "aud") return "aud-mismatch";
		if (err.claim === "nbf") return "not-yet-valid";
		return "missing-claim";
	}
	if (err instanceof errors.JOSEAlgNotAllowed) return "alg-not-allowed";
	if (err instanceof errors.JWSSignatureVerificationFailed) return "bad-signature";
	if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) return "unknown-kid";
	if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) return "jwks-unavailable";
	return "malformed";
}

/** Failures jose reports only after the signature has verified. */
const CLAIM_REASONS = new Set<AuthFailureReason>([
	"expired",
	"not-yet-valid",
	"iss-mismatch",
	"aud-mismatch",
	"missing-claim",
]);

/** The `tid` of a token without checking it: attribution of failures only, never authorisation. */
function unverifiedTenant(token: string): string | undefined {
	try {
		const part = token.split(".")[1];
		if (!part || part.length > 4096) return undefined;
		const text = fromBase64Text(part);
		if (text === null) return undefined;
		const json = JSON.parse(text) as { tid?: unknown };
		return typeof json.tid === "string" && json.tid.length <= 128 ? json.tid : undefined;
	} catch {
		return undefined;
	}
}

const verified = new TtlLru<string, VerifiedClaims>(10_000);

/** Drops every cached verification (tests; key rotation). */
export function clearJwtCache(): void {
	verified.clear();
}

/**
 * Verifies a compact JWS. A token verified before is answered from a bounded per-isolate cache keyed by
 * its SHA-256, until its `exp` at the latest.
 */
export async function verifyJwt(token: string, config: JwtConfig): Promise<AuthResult<VerifiedClaims>> {
	const cacheKey = sha256Hex(token);
	const now = Date.now();
	const cached = verified.get(cacheKey, now);
	if (cached) return { ok: true, value: cached };

	let alg: string | undefined;
	try {
		alg = decodeProtectedHeader(token).alg;
	} catch {
		return { ok: false, reason: "malformed" };
	}
	let payload: JWTPayload;
	const options = {
		issuer: config.issuer,
		audience: config.audience,
		clockTolerance: config.clockToleranceS,
		requiredClaims: ["exp", "iss", "aud", "sub"],
	};
	try {
		if (alg && (HMAC_ALGORITHMS as readonly string[]).includes(alg) && config.hs256Secret) {
			({ payload } = await jwtVerify(token, secretKey(config.hs256Secret), {
				...options,
				algorithms: [...HMAC_ALGORITHMS],
			}));
		} else if (alg && (JWKS_ALGORITHMS as readonly string[]).includes(alg) && config.jwksUrl) {
			({ payload } = await jwtVerify(token, jwks(config.jwksUrl), { ...options, algorithms: [...JWKS_ALGORITHMS] }));
		} else {
			return { ok: false, reason: "alg-not-allowed", claimedTenant: unverifiedTenant(token) };
		}
	} catch (err) {
		// Claim checks run only after the signature verified, so their payload (and its tenant) is authentic.
		const reason = reasonFor(err);
		return CLAIM_REASONS.has(reason)
			? { ok: false, reason, tenantId: unverifiedTenant(token) }
			: { ok: false, reason, claimedTenant: unverifiedTenant(token) };
	}
	const claims = ClaimsSchema.safeParse(payload);
	if (!claims.success) return { ok: false, reason: "missing-claim", tenantId: unverifiedTenant(token) };
	const value: VerifiedClaims = {
		sub: claims.data.sub,
		tenantId: claims.data.tid,
		tier: claims.data.tier,
		scopes: parseScopes(claims.data.scope),
		exp: claims.data.exp,
	};
	verified.set(cacheKey, value, Math.min(value.exp * 1000, now + 10 * 60 * 1000));
	return { ok: true, value };
}
