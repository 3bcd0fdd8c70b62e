/** Audit API handlers: always the caller's own tenant, whatever the request says. */
import type { createRoute, RouteHandler } from "@hono/zod-openapi";
import type { AppEnv } from "../http";
import { listAudit as listRecords, verifyAudit as verifyChain } from "./read";
import type * as routes from "./routes";

type H<R extends Parameters<typeof createRoute>[0]> = RouteHandler<R, AppEnv>;

export const listAudit: H<typeof routes.listAudit> = async (c) => {
	const query = c.req.valid("query");
	return c.json(await listRecords(c.env.DB, c.var.principal.tenantId, query), 200);
};

export const verifyAudit: H<typeof routes.verifyAudit> = async (c) => {
	return c.json(await verifyChain(c.env.DB, c.var.principal.tenantId), 200);
};
