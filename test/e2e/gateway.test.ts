/**
 * The gateway over real HTTP: liveness and readiness, the generated OpenAPI document, the docs page
 * and its self-hosted assets, JWT authentication with RateLimit headers, and problem responses.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Gateway, startGateway } from "../helpers/node/gateway.ts";
import { expectProblem } from "../helpers/node/http.ts";

let gw: Gateway;
const get = (path: string, init?: RequestInit) => fetch(new URL(path, gw.url), init);

beforeAll(async () => {
	gw = await startGateway();
	await gw.seedTenant({ id: "acme", tier: "pro" });
});

afterAll(async () => {
	await gw?.dispose();
});

describe("system routes", () => {
	it("/healthz answers 200", async () => {
		const res = await get("/healthz");
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({ status: "ok" });
	});

	it("/readyz answers 200 once D1 answers", async () => {
		const res = await get("/readyz");
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({ status: "ready", checks: { d1: "ok" } });
	});

	it("/openapi.json is OpenAPI 3.1 and lists /v1/me and the admin routes", async () => {
		const res = await get("/openapi.json");
		expect(res.status).toBe(200);
		expect(res.headers.get("content-type")).toMatch(/^application\/json/);
		const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
		expect(doc.openapi).toMatch(/^3\.1\./);
		expect(Object.keys(doc.paths["/v1/me"] ?? {})).toContain("get");
		expect(Object.keys(doc.paths["/v1/admin/tenants"] ?? {})).toContain("post");
		expect(Object.keys(doc.paths["/v1/admin/tenants/{tenantId}"] ?? {})).toEqual(
			expect.arrayContaining(["get", "patch"]),
		);
		expect(Object.keys(doc.paths["/v1/admin/tenants/{tenantId}/keys"] ?? {})).toEqual(
			expect.arrayContaining(["get", "post"]),
		);
		expect(Object.keys(doc.paths["/v1/admin/tenants/{tenantId}/keys/{keyId}"] ?? {})).toContain("delete");
	});

	it("/docs is HTML that loads Swagger UI from the gateway itself, with no CDN", async () => {
		const res = await get("/docs");
		expect(res.status).toBe(200);
		expect(res.headers.get("content-type")).toMatch(/^text\/html/);
		const html = await res.text();
		expect(html).toContain('src="/docs/vendor/swagger-ui-bundle.js"');
		expect(html).toContain('href="/docs/vendor/swagger-ui.css"');
		// Every script and stylesheet is same-origin: no absolute or protocol-relative URL anywhere.
		expect(html).not.toMatch(/(?:https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}/i);
		expect(html).not.toMatch(/cdn|unpkg|jsdelivr|cdnjs/i);
	});

	it("/docs is served with a CSP that lets the page load its own script and nothing else", async () => {
		const res = await get("/docs");
		await res.arrayBuffer();
		const csp = res.headers.get("content-security-policy") ?? "";
		expect(csp).toContain("script-src 'self'");
		expect(csp).toContain("connect-src 'self'");
		expect(csp).toContain("default-src 'none'");
		// Every other route keeps the strict API policy.
		const api = await get("/healthz");
		await api.arrayBuffer();
		expect(api.headers.get("content-security-policy")).toBe("default-src 'none'; frame-ancestors 'none'");
	});

	it("serves the Swagger UI bundle and the page's other assets as static assets", async () => {
		const bundle = await get("/docs/vendor/swagger-ui-bundle.js");
		expect(bundle.status).toBe(200);
		expect(bundle.headers.get("content-type")).toMatch(/javascript/);
		const js = await bundle.text();
		expect(js.length).toBeGreaterThan(100_000);
		expect(js).toContain("SwaggerUIBundle");

		const css = await get("/docs/vendor/swagger-ui.css");
		expect(css.status).toBe(200);
		expect(css.headers.get("content-type")).toMatch(/^text\/css/);
		await css.arrayBuffer();

		const init = await get("/docs/init.js");
		expect(init.status).toBe(200);
		expect(await init.text()).toContain('url: "/openapi.json"');
	});
});

describe("authentication and problems", () => {
	it("GET /v1/me with a JWT (api:read) answers 200 with RateLimit headers", async () => {
		const token = await gw.mintJwt({ tenantId: "acme", scopes: ["api:read"], sub: "alice" });
		const res = await get("/v1/me", { headers: { authorization: `Bearer ${token}` } });
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({
			tenantId: "acme",
			actor: "jwt:alice",
			via: "jwt",
			tier: "pro",
			scopes: ["api:read"],
		});
		expect(res.headers.get("ratelimit-policy")).toMatch(/"burst";q=\d+;w=\d+/);
		expect(res.headers.get("ratelimit-policy")).toMatch(/"monthly";q=\d+;w=\d+/);
		expect(res.headers.get("ratelimit")).toMatch(/"burst";r=\d+;t=\d+/);
		expect(res.headers.get("ratelimit")).toMatch(/"monthly";r=\d+;t=\d+/);
		expect(res.headers.get("x-request-id")).toMatch(/\S/);
	});

	it("GET /v1/me without credentials is a 401 problem with a Bearer challenge", async () => {
		const res = await get("/v1/me");
		await expectProblem(res, 401, "invalid-token");
		expect(res.headers.get("www-authenticate")).toMatch(/^Bearer realm=/);
	});

	it("GET /v1/me with a malformed token is a 401 problem", async () => {
		const res = await get("/v1/me", { headers: { authorization: "Bearer not.a.jwt" } });
		await expectProblem(res, 401, "invalid-token");
	});

	it("a JWT without the scope is a 403 problem", async () => {
		const token = await gw.mintJwt({ tenantId: "acme", scopes: ["files"] });
		const res = await get("/v1/me", { headers: { authorization: `Bearer ${token}` } });
		await expectProblem(res, 403, "insufficient-scope");
	});

	it("an unknown route is a 404 problem", async () => {
		await expectProblem(await get("/no/such/route"), 404, "not-found");
	});

	it("DELETE /healthz is a 405 problem with Allow", async () => {
		const res = await get("/healthz", { method: "DELETE" });
		await expectProblem(res, 405, "method-not-allowed");
		const allow = (res.headers.get("allow") ?? "").split(/,\s*/);
		expect(allow).toContain("GET");
		expect(allow).not.toContain("DELETE");
	});
});
