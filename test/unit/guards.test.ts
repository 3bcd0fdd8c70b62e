/** The authorisation guards on a throwaway app: they refuse before the handler runs. */
import { env } from "cloudflare:workers";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { type Principal, requireOperator, requirePlane, requireScope } from "../../src/auth";
import type { AuthVariables } from "../../src/http";
import { problemResponse, requestContext, toApiError } from "../../src/http";

function appWith(principal: Partial<Principal>, guard: ReturnType<typeof requireScope>) {
	let ran = false;
	const app = new Hono<{ Bindings: Env; Variables: AuthVariables }>();
	app.use(requestContext());
	app.use(async (c, next) => {
		c.set("principal", {
			tenantId: "t1",
			actor: "jwt:u",
			via: "jwt",
			keyId: undefined,
			tier: "pro",
			scopes: [],
			tenantLimits: null,
			keyLimits: null,
			...principal,
		});
		await next();
	});
	app.get("/x", guard, (c) => {
		ran = true;
		return c.text("ok");
	});
	app.onError((err, c) => problemResponse(c, toApiError(err)));
	return { request: () => app.request("/x", {}, env), ran: () => ran };
}

describe("guards", () => {
	it("requireScope lets a holder through and refuses others with insufficient_scope", async () => {
		const ok = appWith({ scopes: ["llm"] }, requireScope("llm"));
		expect((await ok.request()).status).toBe(200);
		const no = appWith({ scopes: ["api:read"] }, requireScope("llm"));
		const res = await no.request();
		expect(res.status).toBe(403);
		expect(((await res.json()) as { code: string }).code).toBe("insufficient-scope");
		expect(res.headers.get("www-authenticate")).toBe('Bearer realm="edgeway", error="insufficient_scope", scope="llm"');
		expect(no.ran()).toBe(false);
	});

	it("requirePlane refuses a plane the tier does not include", async () => {
		const free = appWith({ tier: "free" }, requirePlane("llm"));
		const res = await free.request();
		expect(res.status).toBe(403);
		expect(((await res.json()) as { code: string }).code).toBe("tier-not-allowed");
		expect(free.ran()).toBe(false);
		expect((await appWith({ tier: "pro" }, requirePlane("llm")).request()).status).toBe(200);
	});

	it("requireOperator admits only the operator tenant", async () => {
		const other = appWith({ tenantId: "acme" }, requireOperator());
		expect((await other.request()).status).toBe(403);
		expect(other.ran()).toBe(false);
		expect((await appWith({ tenantId: env.OPERATOR_TENANT }, requireOperator()).request()).status).toBe(200);
	});
});
