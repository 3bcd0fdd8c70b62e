/**
 * Admin API for circuit breakers (mounted under /v1/admin, scope `admin`): list the caller's breakers
 * (an operator also sees the gateway's own) as of their last transition, and reset one. A tenant can only
 * see and reset `tenant:<its id>:…` breakers; anything else is a 404.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, desc, eq } from "drizzle-orm";
import { appendAudit } from "../audit";
import { config } from "../config";
import { breakers, database } from "../db";
import { ApiError, type AppEnv, BEARER, createRouter, jsonResponse, problems } from "../http";
import { BREAKER_STATES, circuitBreakerFor, parseBreakerName } from "./interface";

const BreakerSchema = z
	.object({
		name: z.string(),
		target: z.string(),
		state: z.enum(BREAKER_STATES),
		reason: z.string().nullable(),
		updatedAt: z.number().int(),
	})
	.openapi("Breaker");

const list = createRoute({
	method: "get",
	path: "/breakers",
	summary: "The caller's circuit breakers (an operator also sees the gateway's), as of their last transition",
	security: BEARER,
	request: { query: z.object({ state: z.enum(BREAKER_STATES).optional() }) },
	responses: {
		200: jsonResponse(z.object({ breakers: z.array(BreakerSchema) }), "Breakers, most recently changed first"),
		...problems(400, 401, 403, 429),
	},
});

const reset = createRoute({
	method: "post",
	path: "/breakers/reset",
	summary: "Close a breaker now (every isolate learns it within a few seconds)",
	security: BEARER,
	request: {
		body: {
			required: true,
			content: { "application/json": { schema: z.object({ name: z.string().min(1).max(512) }).strict() } },
		},
	},
	responses: {
		200: jsonResponse(z.object({ name: z.string(), state: z.enum(BREAKER_STATES) }), "The breaker after the reset"),
		...problems(400, 401, 403, 404, 429),
	},
});

export function breakerRoutes() {
	const app = createRouter<AppEnv>();

	app.openapi(list, async (c) => {
		const { state } = c.req.valid("query");
		// The gateway's own breakers are registered under the operator tenant, so one filter serves both.
		const tenantId = c.var.principal.tenantId;
		const rows = await database(c.env.DB)
			.select({
				name: breakers.name,
				target: breakers.target,
				state: breakers.state,
				reason: breakers.reason,
				updatedAt: breakers.updatedAt,
			})
			.from(breakers)
			.where(and(eq(breakers.tenantId, tenantId), state ? eq(breakers.state, state) : undefined))
			.orderBy(desc(breakers.updatedAt))
			.limit(500);
		return c.json({ breakers: rows }, 200);
	});

	app.openapi(reset, async (c) => {
		const { name } = c.req.valid("json");
		const p = c.var.principal;
		const parsed = parseBreakerName(name);
		const operator = p.tenantId === config(c.env).OPERATOR_TENANT;
		const mine = parsed?.scope === "tenant" ? parsed.tenantId === p.tenantId : operator;
		if (!parsed || !mine) throw new ApiError("not-found", "No such breaker.");
		const snapshot = await circuitBreakerFor(c.env, name).reset({});
		await appendAudit(c.env.DB, {
			tenantId: parsed.scope === "tenant" ? parsed.tenantId : p.tenantId,
			actor: p.actor,
			action: "breaker.reset",
			target: `breaker:${name}`,
			requestId: c.var.requestId,
			metadata: null,
		});
		return c.json({ name, state: snapshot.state }, 200);
	});

	return app;
}
