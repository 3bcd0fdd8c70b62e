/** `requireAuth`, `requireScope`, `requirePlane`, `requireOperator`: the checks every protected route group mounts. */
import type { Context, MiddlewareHandler } from "hono";
import { config, narrowerTier, type Plane, type Scope, tierPolicy } from "../config";
import { ApiError, type AppEnv, log, waitUntil } from "../http";
import { looksLikeApiKey, touchKey, verifyApiKey } from "./api-keys";
import { failureRecorderFor } from "./failures";
import { verifyJwt } from "./jwt";
import type { AuthFailure, Principal } from "./principal";
import { tenantView } from "./tenants";

function refuse(c: Context<AppEnv>, failure: Omit<AuthFailure, "ok">): never {
	const { reason, tenantId, claimedTenant } = failure;
	log("warn", "authentication failed", {
		reason,
		tenantId,
		claimedTenant,
		requestId: c.var.requestId,
		traceId: c.var.trace?.traceId,
	});
	if (reason !== "missing") waitUntil(c, failureRecorderFor(c.env).record(reason, tenantId, claimedTenant));
	const challenge = reason === "missing" ? 'Bearer realm="edgeway"' : 'Bearer realm="edgeway", error="invalid_token"';
	throw new ApiError(
		"invalid-token",
		reason === "missing" ? "Authentication is required." : "The access token is invalid.",
		{ headers: { "www-authenticate": challenge }, reason },
	);
}

function credential(c: Context): string | undefined {
	const header = c.req.header("authorization");
	if (header) {
		const m = /^Bearer[ ]+([^\s]+)\s*$/i.exec(header);
		return m ? m[1] : "";
	}
	return c.req.header("x-api-key");
}

/**
 * Authenticates the caller with a JWT (Bearer) or an API key (Bearer `ew_…` or `x-api-key`), refuses
 * a suspended tenant, and puts the {@link Principal} on the context.
 */
export function requireAuth(): MiddlewareHandler<AppEnv> {
	return async function requireAuth(c, next) {
		const presented = credential(c);
		if (presented === undefined) refuse(c, { reason: "missing" });
		if (!presented || presented.length > 8192) refuse(c, { reason: "malformed" });
		const cfg = config(c.env);

		let principal: Omit<Principal, "tier" | "tenantLimits"> & { credentialTier: Principal["tier"] | undefined };
		if (looksLikeApiKey(presented)) {
			const result = await verifyApiKey(c.env.DB, presented);
			if (!result.ok) refuse(c, result);
			const key = result.value;
			principal = {
				tenantId: key.tenantId,
				actor: `key:${key.id}`,
				via: "api-key",
				keyId: key.id,
				credentialTier: key.tier ?? undefined,
				scopes: key.scopes,
				keyLimits: key.limits,
			};
			waitUntil(c, touchKey(c.env.DB, key.id));
		} else {
			const result = await verifyJwt(presented, {
				issuer: cfg.JWT_ISSUER,
				audience: cfg.JWT_AUDIENCE,
				clockToleranceS: cfg.JWT_CLOCK_TOLERANCE_S,
				hs256Secret: cfg.JWT_HS256_SECRET,
				jwksUrl: cfg.JWKS_URL,
			});
			if (!result.ok) refuse(c, result);
			const claims = result.value;
			principal = {
				tenantId: claims.tenantId,
				actor: `jwt:${claims.sub}`,
				via: "jwt",
				keyId: undefined,
				credentialTier: claims.tier,
				scopes: claims.scopes,
				keyLimits: null,
			};
		}

		const tenant = await tenantView(c.env.DB, principal.tenantId);
		if (!tenant) refuse(c, { reason: "unknown-tenant", claimedTenant: principal.tenantId });
		c.set("tenantId", tenant.id);
		if (tenant.status !== "active") {
			throw new ApiError("tenant-suspended", "This tenant is suspended.", { reason: `tenant ${tenant.id} suspended` });
		}
		const { credentialTier, ...rest } = principal;
		c.set("principal", {
			...rest,
			tier: narrowerTier(tenant.tier, credentialTier),
			tenantLimits: tenant.limits,
		});
		await next();
	};
}

/** 403 unless the caller holds `scope`. */
export function requireScope(scope: Scope): MiddlewareHandler<AppEnv> {
	return async function requireScope(c, next) {
		if (!c.var.principal.scopes.includes(scope)) {
			throw new ApiError("insufficient-scope", `This operation needs the "${scope}" scope.`, {
				headers: { "www-authenticate": `Bearer realm="edgeway", error="insufficient_scope", scope="${scope}"` },
			});
		}
		await next();
	};
}

/** 403 unless the caller's tier includes `plane`. */
export function requirePlane(plane: Plane): MiddlewareHandler<AppEnv> {
	return async function requirePlane(c, next) {
		if (!tierPolicy(c.var.principal.tier).planes.includes(plane)) {
			throw new ApiError("tier-not-allowed", `The ${c.var.principal.tier} tier does not include the ${plane} plane.`);
		}
		await next();
	};
}

/** 403 unless the caller belongs to the operator tenant (gateway-wide administration). */
export function requireOperator(): MiddlewareHandler<AppEnv> {
	return async function requireOperator(c, next) {
		if (c.var.principal.tenantId !== config(c.env).OPERATOR_TENANT) {
			throw new ApiError("forbidden", "Only the operator tenant may do this.");
		}
		await next();
	};
}
