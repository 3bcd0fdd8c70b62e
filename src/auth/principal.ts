/** Who is calling: what authentication puts on the context, and the internal failure reasons. */
export type { Principal } from "../http";

/** Why a credential was refused. Logged precisely; the client only learns "invalid token". */
export type AuthFailureReason =
	| "missing"
	| "malformed"
	| "alg-not-allowed"
	| "bad-signature"
	| "expired"
	| "not-yet-valid"
	| "iss-mismatch"
	| "aud-mismatch"
	| "missing-claim"
	| "unknown-kid"
	| "jwks-unavailable"
	| "unknown-key"
	| "bad-secret"
	| "revoked"
	| "key-expired"
	| "unknown-tenant";

/**
 * A failed check. `tenantId` is set only when the tenant is known from verified data (a key found by
 * its prefix, a JWT whose signature verified); `claimedTenant` is what an unverifiable token claims.
 */
export interface AuthFailure {
	ok: false;
	reason: AuthFailureReason;
	tenantId?: string;
	claimedTenant?: string;
}

export type AuthResult<T> = { ok: true; value: T } | AuthFailure;
