/** The HTTP core through the whole app: ids, tracing, headers, and every kind of bad input → the right 4xx problem. */
import { env } from "cloudflare:workers";
import { HTTPException } from "hono/http-exception";
import { describe, expect, it } from "vitest";
import { call, expectProblem, type Problem } from "../helpers/gateway";
import { hsToken, operatorToken, seedTenant } from "../helpers/identity";

const OPERATOR = env.OPERATOR_TENANT;

describe("request id and trace context", () => {
	it("echoes a well-formed X-Request-Id and replaces a malformed one", async () => {
		const kept = await call("/healthz", { headers: { "x-request-id": "req-12345678" } });
		expect(kept.headers.get("x-request-id")).toBe("req-12345678");
		const replaced = await call("/healthz", { headers: { "x-request-id": "bad id with spaces\u0001" } });
		expect(replaced.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
	});

	it("continues an incoming traceparent with a new span id", async () => {
		const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
		const res = await call("/healthz", { headers: { traceparent: incoming } });
		const echoed = res.headers.get("traceparent") ?? "";
		expect(echoed).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
		expect(echoed).not.toBe(incoming);
	});

	it("starts a new trace for a missing or invalid traceparent", async () => {
		for (const tp of [undefined, "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"]) {
			const res = await call("/healthz", tp ? { headers: { traceparent: tp } } : {});
			const echoed = res.headers.get("traceparent") ?? "";
			expect(echoed).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
			expect(echoed).not.toContain("00000000000000000000000000000000");
		}
	});
});

describe("security headers and system routes", () => {
	it("sends security headers on every response", async () => {
		for (const res of [await call("/healthz"), await call("/nope")]) {
			expect(res.headers.get("x-content-type-options")).toBe("nosniff");
			expect(res.headers.get("x-frame-options")).toBe("DENY");
			expect(res.headers.get("strict-transport-security")).toContain("max-age=");
			expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
		}
	});

	it("answers CORS preflights for the configured origins", async () => {
		const res = await call("/v1/me", {
			method: "OPTIONS",
			headers: { origin: "https://app.example", "access-control-request-method": "GET" },
		});
		expect(res.status).toBe(204);
		expect(res.headers.get("access-control-allow-origin")).toBe("*");
		expect(res.headers.get("access-control-allow-headers")).toContain("authorization");
	});

	it("reports readiness after checking D1", async () => {
		const res = await call("/readyz");
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({ status: "ready", checks: { d1: "ok" } });
	});

	it("serves a generated OpenAPI 3.1 document and an offline docs page", async () => {
		const doc = (await (await call("/openapi.json")).json()) as { openapi: string; paths: Record<string, unknown> };
		expect(doc.openapi).toBe("3.1.0");
		expect(Object.keys(doc.paths)).toEqual(
			expect.arrayContaining([
				"/healthz",
				"/readyz",
				"/v1/me",
				"/v1/admin/tenants",
				"/v1/admin/tenants/{tenantId}/keys",
			]),
		);
		const page = await call("/docs");
		const html = await page.text();
		expect(page.headers.get("content-type")).toContain("text/html");
		expect(html).toContain("/docs/vendor/swagger-ui-bundle.js");
		expect(html).not.toMatch(/https?:\/\//);
	});

	it("sends / to the docs page", async () => {
		for (const method of ["GET", "HEAD"]) {
			const res = await call("/", { method, redirect: "manual" });
			expect(res.status).toBe(302);
			expect(res.headers.get("location")).toBe("/docs");
		}
	});
});

describe("bad input gives a 4xx problem, never a 500", () => {
	it("unknown route → 404", async () => {
		await expectProblem(await call("/v2/nothing"), 404, "not-found");
	});

	it("wrong method → 405 with Allow", async () => {
		const res = await call("/healthz", { method: "DELETE" });
		await expectProblem(res, 405, "method-not-allowed");
		expect(res.headers.get("allow")).toBe("GET, HEAD");
		const keys = await call(`/v1/admin/tenants/${OPERATOR}/keys`, { method: "PUT", token: await operatorToken() });
		expect(keys.headers.get("allow")).toBe("GET, HEAD, POST");
		await expectProblem(keys, 405, "method-not-allowed");
	});

	it("malformed JSON → 400 malformed-json", async () => {
		const token = await operatorToken();
		const res = await call("/v1/admin/tenants", {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: '{"id": "x", ',
			token,
		});
		await expectProblem(res, 400, "malformed-json");
	});

	it("wrong content type → 415", async () => {
		const token = await operatorToken();
		for (const type of ["text/plain", "application/x-www-form-urlencoded", ""]) {
			const res = await call("/v1/admin/tenants", {
				method: "POST",
				headers: type ? { "content-type": type } : {},
				body: JSON.stringify({ id: "ct-test", name: "x", tier: "free" }),
				token,
			});
			await expectProblem(res, 415, "unsupported-media-type");
		}
	});

	it("a body over the tier's limit → 413, declared or streamed", async () => {
		const tenantId = await seedTenant({ tier: "free" }); // 64 KiB
		const token = await hsToken({ tenantId, scopes: ["admin"] });
		const big = JSON.stringify({ name: "x".repeat(70 * 1024), scopes: ["admin"] });
		const declared = await call(`/v1/admin/tenants/${tenantId}/keys`, {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: big,
			token,
		});
		await expectProblem(declared, 413, "payload-too-large");

		const chunks = new TextEncoder().encode(big);
		const stream = new ReadableStream<Uint8Array>({
			start(controller) {
				for (let i = 0; i < chunks.length; i += 8192) controller.enqueue(chunks.slice(i, i + 8192));
				controller.close();
			},
		});
		const streamed = await call(`/v1/admin/tenants/${tenantId}/keys`, {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: stream,
			token,
			// @ts-expect-error: duplex is required for a streamed request body
			duplex: "half",
		});
		await expectProblem(streamed, 413, "payload-too-large");
	});

	it("huge headers → 431", async () => {
		const res = await call("/healthz", { headers: { "x-filler": "a".repeat(40 * 1024) } });
		await expectProblem(res, 431, "headers-too-large");
	});

	it("a validation failure names the failing fields", async () => {
		const token = await operatorToken();
		const res = await call("/v1/admin/tenants/UPPER/keys", { token });
		const body = await expectProblem(res, 400, "validation-failed");
		expect(body.errors?.[0]?.path).toBe("param.tenantId");
	});

	it("never leaks an internal message for an unexpected error", async () => {
		const { createApp } = await import("../../src/app");
		const app = createApp();
		app.get("/boom", () => {
			throw new Error("secret internal detail");
		});
		const res = await app.request("/boom", {}, env);
		const body = await expectProblem(res, 500, "internal");
		expect(JSON.stringify(body)).not.toContain("secret internal detail");
	});
});

describe("problem responses", () => {
	it("name the request's path as instance, never its query", async () => {
		const res = await call("/v2/nothing/%C3%A9t%C3%A9?api_key=sk-secret-in-query");
		const text = await res.clone().text();
		const body = (await expectProblem(res, 404, "not-found")) as Problem & { instance?: string };
		expect(body.instance).toBe("/v2/nothing/%C3%A9t%C3%A9");
		expect(text).not.toContain("sk-secret-in-query");
	});

	it("declare instance in the OpenAPI Problem schema", async () => {
		const doc = (await (await call("/openapi.json")).json()) as {
			components: { schemas: { Problem: { properties: Record<string, unknown>; required: string[] } } };
		};
		expect(doc.components.schemas.Problem.properties).toHaveProperty("instance");
		expect(doc.components.schemas.Problem.required).toContain("instance");
	});

	it("leave OpenAI-shaped errors as they are", async () => {
		const res = await call("/v1/models");
		expect(res.status).toBe(401);
		expect(Object.keys((await res.json()) as object)).toEqual(["error"]);
	});

	it("keep the headers an HTTPException carries (WWW-Authenticate on 401, Retry-After on 429 and 503)", async () => {
		const { createApp } = await import("../../src/app");
		const app = createApp();
		const thrown = {
			401: {
				code: "invalid-token",
				header: "www-authenticate",
				value: 'Bearer realm="edgeway", error="invalid_token"',
			},
			429: { code: "rate-limited", header: "retry-after", value: "7" },
			503: { code: "dependency-unavailable", header: "retry-after", value: "30" },
		} as const;
		app.get("/http-exception/:status", (c) => {
			const status = Number(c.req.param("status")) as keyof typeof thrown;
			const { header, value } = thrown[status];
			const res = new Response("plain text", { headers: { [header]: value, "content-type": "text/plain" } });
			throw new HTTPException(status, { res, message: "thrown by a middleware" });
		});
		for (const [status, { code, header, value }] of Object.entries(thrown)) {
			const res = await app.request(`/http-exception/${status}`, {}, env);
			await expectProblem(res, Number(status), code);
			expect(res.headers.get(header)).toBe(value);
			expect(res.headers.get("x-content-type-options")).toBe("nosniff");
		}
	});

	it("never let an HTTPException's other headers replace the request id, security or CORS headers", async () => {
		const { createApp } = await import("../../src/app");
		const app = createApp();
		const planted = {
			"x-request-id": "planted",
			"content-security-policy": "default-src *",
			"x-frame-options": "ALLOWALL",
			"access-control-allow-origin": "https://evil.example",
			"set-cookie": "session=planted",
		};
		app.get("/http-exception-headers", () => {
			throw new HTTPException(401, { res: new Response(null, { headers: planted }), message: "planted headers" });
		});
		const res = await app.request("/http-exception-headers", { headers: { "x-request-id": "req-kept-1" } }, env);
		await expectProblem(res, 401, "invalid-token");
		expect(res.headers.get("x-request-id")).toBe("req-kept-1");
		for (const [name, value] of Object.entries(planted)) expect(res.headers.get(name), name).not.toBe(value);
	});
});
