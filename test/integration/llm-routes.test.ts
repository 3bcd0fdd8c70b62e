/**
 * The LLM plane's routes are guarded where their group is mounted: every route the group's router
 * registers (read from the router, not from a list) refuses a call without a credential, in the error
 * shape of its path, and a route added to a guarded group is guarded without being listed anywhere.
 */
import { env } from "cloudflare:workers";
import type { MiddlewareHandler } from "hono";
import { describe, expect, it } from "vitest";
import { createApp, mountGuarded } from "../../src/app";
import { type AppEnv, createRouter } from "../../src/http";
import { isOpenAiPath, llmRoutes, OPENAI_BASE } from "../../src/llm";

/** Method and path of each route the group registers (a validated route registers its validators too: once each). */
const registered = [
	...new Map(
		llmRoutes()
			.routes.filter((r) => r.method !== "ALL")
			.map((r) => [`${r.method} ${r.path}`, { method: r.method, path: `${OPENAI_BASE}${r.path}` }]),
	).values(),
];

describe("the LLM route group", () => {
	it("registers the OpenAI-compatible routes and the usage report", () => {
		expect(registered).toEqual(
			expect.arrayContaining([
				{ method: "POST", path: "/v1/chat/completions" },
				{ method: "POST", path: "/v1/embeddings" },
				{ method: "GET", path: "/v1/models" },
				{ method: "GET", path: "/v1/usage" },
			]),
		);
	});

	it.each(registered)("$method $path answers 401 without a credential", async ({ method, path }) => {
		const body = method === "GET" || method === "HEAD" ? undefined : "{}";
		const res = await createApp().request(path, { method, headers: { "content-type": "application/json" }, body }, env);
		expect(res.status).toBe(401);
		expect(res.headers.get("www-authenticate")).toMatch(/^Bearer realm="edgeway"/);
		const json = (await res.json()) as { code?: string; error?: { code?: string; type?: string } };
		if (isOpenAiPath(path)) {
			expect(json.error).toMatchObject({ code: "invalid_token", type: "authentication_error" });
		} else {
			expect(res.headers.get("content-type")).toBe("application/problem+json");
			expect(json.code).toBe("invalid-token");
		}
	});
});

describe("mountGuarded", () => {
	const refuse: MiddlewareHandler<AppEnv> = async (c) => c.text("guarded", 401);

	function guardedApp() {
		const handled: string[] = [];
		const group = createRouter<AppEnv>();
		group.get("/known", (c) => c.text("known"));
		// A route added later, listed nowhere but in the group itself.
		group.post("/added/later", (c) => {
			handled.push(c.req.path);
			return c.text("added");
		});
		const app = createRouter<AppEnv>();
		app.get("/v1/open", (c) => c.text("open"));
		mountGuarded(app, "/v1", group, [refuse]);
		return { app, handled };
	}

	it("guards a route added to the group, and everything under its first segment, before its handler runs", async () => {
		const { app, handled } = guardedApp();
		for (const [method, path] of [
			["POST", "/v1/added/later"],
			["GET", "/v1/added"],
			["GET", "/v1/known"],
			["GET", "/v1/known/deeper"],
		] as const) {
			const res = await app.request(path, { method }, env);
			expect({ path, status: res.status, body: await res.text() }).toEqual({ path, status: 401, body: "guarded" });
		}
		expect(handled).toEqual([]);
	});

	it("leaves the parent's other routes alone", async () => {
		const { app } = guardedApp();
		const res = await app.request("/v1/open", {}, env);
		expect(res.status).toBe(200);
	});

	it("refuses a group whose route has no fixed first segment to guard", () => {
		const group = createRouter<AppEnv>();
		group.get("/:id", (c) => c.text("x"));
		expect(() => mountGuarded(createRouter<AppEnv>(), "/v1", group, [refuse])).toThrow(/no fixed first segment/);
	});
});
