export {
	forgetKey,
	generateApiKey,
	KEY_CACHE_MS,
	LAST_USED_WRITE_INTERVAL_MS,
	touchKey,
	verifyApiKey,
} from "./api-keys";
export { FailureRecorder, failureRecorderFor } from "./failures";
export { clearJwtCache, HMAC_ALGORITHMS, JWKS_ALGORITHMS, type JwtConfig, type VerifiedClaims, verifyJwt } from "./jwt";
export {
	requireAuth,
	requireOperator,
	requirePlane,
	requireScope,
} from "./middleware";
export type { AuthFailureReason, AuthResult, Principal } from "./principal";
export { forgetTenant, parseLimits, TENANT_CACHE_MS, type TenantView, tenantView } from "./tenants";
