/**
 * The operator's side of the admin API over real HTTP, for e2e tests: the operator tenant seeded in the
 * gateway's D1, a token of its admin, and the calls an operator makes. Each call returns the gateway's
 * Response untouched, so a test asserts on it as it would on its own request.
 */
import { afterAll, beforeAll } from "vitest";
import { type Gateway, type GatewayOptions, startGateway, type TierName } from "./gateway.ts";
import { call } from "./http.ts";

export interface Operator {
	/** OPERATOR_TENANT, as the gateway was given it. */
	tenantId: string;
	/** A JWT of the operator tenant with scope `admin`. */
	token: string;
	/** `POST /v1/admin/tenants` */
	createTenant(base: URL, tenant: { id: string; name: string; tier: TierName }): Promise<Response>;
	/** `GET /v1/admin/tenants/{id}` */
	getTenant(base: URL, tenantId: string): Promise<Response>;
	/** `PATCH /v1/admin/tenants/{id}` with `{ status }` */
	setTenantStatus(base: URL, tenantId: string, status: "active" | "suspended"): Promise<Response>;
	/** `POST /v1/admin/tenants/{id}/keys` */
	createKey(base: URL, tenantId: string, key: { name: string; scopes: string[] }): Promise<Response>;
	/** `GET /v1/admin/tenants/{id}/keys` */
	listKeys(base: URL, tenantId: string): Promise<Response>;
	/** `DELETE /v1/admin/tenants/{id}/keys/{keyId}` */
	revokeKey(base: URL, tenantId: string, keyId: string): Promise<Response>;
}

/** Seeds the operator tenant (enterprise) in `gw`'s D1 and mints its admin token (subject `ops`). */
export async function seedOperator(gw: Gateway): Promise<Operator> {
	const tenantId = String(gw.vars.OPERATOR_TENANT);
	await gw.seedTenant({ id: tenantId, tier: "enterprise" });
	const token = await gw.mintJwt({ tenantId, scopes: ["admin"], sub: "ops" });
	const headers = { authorization: `Bearer ${token}` };
	const tenantPath = (id: string) => `/v1/admin/tenants/${encodeURIComponent(id)}`;
	return {
		tenantId,
		token,
		createTenant: (base, tenant) => call(base, "/v1/admin/tenants", { method: "POST", headers, body: tenant }),
		getTenant: (base, id) => call(base, tenantPath(id), { headers }),
		setTenantStatus: (base, id, status) => call(base, tenantPath(id), { method: "PATCH", headers, body: { status } }),
		createKey: (base, id, key) => call(base, `${tenantPath(id)}/keys`, { method: "POST", headers, body: key }),
		listKeys: (base, id) => call(base, `${tenantPath(id)}/keys`, { headers }),
		revokeKey: (base, id, keyId) =>
			call(base, `${tenantPath(id)}/keys/${encodeURIComponent(keyId)}`, { method: "DELETE", headers }),
	};
}

/** A test file's gateway and its operator, set once the file's `beforeAll` hooks have run. */
export interface OperatorGateway {
	readonly gw: Gateway;
	readonly operator: Operator;
}

/**
 * Registers the hooks of a test file that talks to the admin API as the operator: before its tests,
 * start a gateway with `options` and seed the operator; after them, dispose of the gateway.
 */
export function useOperatorGateway(options: GatewayOptions = {}): OperatorGateway {
	let gw: Gateway | undefined;
	let operator: Operator | undefined;
	beforeAll(async () => {
		gw = await startGateway(options);
		operator = await seedOperator(gw);
	});
	afterAll(async () => {
		await gw?.dispose();
	});
	const ready = <T>(value: T | undefined): T => {
		if (value === undefined) throw new Error("useOperatorGateway: read before its beforeAll hook ran");
		return value;
	};
	return {
		get gw() {
			return ready(gw);
		},
		get operator() {
			return ready(operator);
		},
	};
}
