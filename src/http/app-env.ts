/** The Hono environment every protected route group shares: the bindings, and what the edge checks put on the context. */
import type { Limits, Scope, TierName } from "../config";
import type { RequestContextVariables } from "./request-context";

/** Who is calling, as authentication (src/auth) establishes it. */
export interface Principal {
	tenantId: string;
	/** `jwt:<sub>` or `key:<id>`: who to name in the audit log. */
	actor: string;
	via: "jwt" | "api-key";
	keyId: string | undefined;
	/** The effective tier: the tenant's, narrowed by the credential's. */
	tier: TierName;
	scopes: Scope[];
	tenantLimits: Limits | null;
	keyLimits: Limits | null;
}

export interface AuthVariables extends RequestContextVariables {
	principal: Principal;
	tenantId: string;
}

export type AppEnv = { Bindings: Env; Variables: AuthVariables };
