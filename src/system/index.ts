/** Liveness, readiness, the OpenAPI document and the docs page. */
import { createRoute, z } from "@hono/zod-openapi";
import { sql } from "drizzle-orm";
import { database } from "../db";
import { ApiError, createRouter, log, problems } from "../http";
import { errorMessage } from "../lib";

type SystemEnv = { Bindings: Env };

const healthz = createRoute({
	method: "get",
	path: "/healthz",
	summary: "Liveness: the Worker answers",
	responses: {
		200: { description: "Alive", content: { "application/json": { schema: z.object({ status: z.literal("ok") }) } } },
	},
});

const readyz = createRoute({
	method: "get",
	path: "/readyz",
	summary: "Readiness: D1 answers a query",
	responses: {
		200: {
			description: "Ready",
			content: {
				"application/json": {
					schema: z.object({ status: z.literal("ready"), checks: z.record(z.string(), z.string()) }),
				},
			},
		},
		...problems(503),
	},
});

export function systemRoutes() {
	return createRouter<SystemEnv>()
		.openapi(healthz, (c) => c.json({ status: "ok" as const }, 200))
		.openapi(readyz, async (c) => {
			try {
				await database(c.env.DB).run(sql`select 1`);
			} catch (err) {
				log("error", "readiness check failed", {
					check: "d1",
					error: errorMessage(err),
				});
				throw new ApiError("dependency-unavailable", "D1 is not answering.");
			}
			return c.json({ status: "ready" as const, checks: { d1: "ok" } }, 200);
		});
}

/** The docs page: Swagger UI from this Worker's own static assets (`/docs/vendor/`), no CDN. */
export const DOCS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Edgeway API</title>
<link rel="stylesheet" href="/docs/vendor/swagger-ui.css">
</head>
<body>
<div id="ui"></div>
<script src="/docs/vendor/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>`;
