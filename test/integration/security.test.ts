/** The shared security suite, run against every protected route group. */
import { securitySuite } from "../helpers/security-suite";

securitySuite({
	group: "api (GET /v1/me)",
	scope: "api:read",
	request: () => ({ path: "/v1/me" }),
	okStatus: 200,
});

securitySuite({
	group: "admin (GET /v1/admin/tenants/{id}/keys)",
	scope: "admin",
	request: (tenantId) => ({ path: `/v1/admin/tenants/${tenantId}/keys` }),
	okStatus: 200,
});

securitySuite({
	group: "admin (POST /v1/admin/tenants/{id}/keys)",
	scope: "admin",
	request: (tenantId) => ({
		path: `/v1/admin/tenants/${tenantId}/keys`,
		init: {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: JSON.stringify({ name: "suite", scopes: ["admin"] }),
		},
	}),
	okStatus: 201,
});
