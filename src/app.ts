/** Assembles the Hono app: the edge checks in order, then each route group behind its own guards. */

import { createRoute, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { adminRoutes } from "./admin";
import { auditRoutes } from "./audit";
import { requireAuth, requirePlane, requireScope } from "./auth";
import { breakerRoutes } from "./breaker";
import { config, tierPolicy } from "./config";
import {
	ApiError,
	type AppEnv,
	type AuthVariables,
	accessLog,
	allowedMethods,
	corsPolicy,
	createRouter,
	headerLimit,
	limitBody,
	log,
	problemResponse,
	problems,
	requestContext,
	requireJsonBody,
	securityHeaders,
	toApiError,
} from "./http";
import { isOpenAiPath, llmRoutes, openAiErrorResponse, providerKeyRoutes, usageRoutes } from "./llm";
import { type AdmitOptions, admit } from "./ratelimit";
import { DOCS_HTML, systemRoutes } from "./system";
import { ingestRoutes, webhookRoutes } from "./webhooks";

export interface AppOptions {
	/** Swap the admission backend (tests). */
	admission?: AdmitOptions["admission"];
}

/** Largest request header block accepted (bytes). */
const MAX_HEADER_BYTES = 32 * 1024;

const me = createRoute({
	method: "get",
	path: "/me",
	summary: "Who the caller is, and its tier and limits",
	security: [{ bearer: [] }],
	responses: {
		200: {
			description: "The caller",
			content: {
				"application/json": {
					schema: z.object({
						tenantId: z.string(),
						actor: z.string(),
						via: z.enum(["jwt", "api-key"]),
						tier: z.string(),
						scopes: z.array(z.string()),
					}),
				},
			},
		},
		...problems(401, 403, 429),
	},
});

/**
 * The guards a protected route group mounts, in order: authenticate → scope → tier plane →
 * body limit of the tier → JSON content type → admission.
 */
function protect(
	scope: Parameters<typeof requireScope>[0],
	options: AppOptions,
	plane: Parameters<typeof requirePlane>[0] = "api",
): MiddlewareHandler<AppEnv>[] {
	return [
		requireAuth(),
		requireScope(scope),
		requirePlane(plane),
		limitBody((c) => tierPolicy((c.var as AuthVariables).principal.tier).maxBodyBytes),
		requireJsonBody(),
		admit({ admission: options.admission }),
	];
}

/** The one error renderer: OpenAI's shape on the OpenAI-compatible routes, RFC 9457 problems everywhere else. */
function renderError(c: Context, error: ApiError): Response {
	return isOpenAiPath(c.req.path) ? openAiErrorResponse(c, error) : problemResponse(c, error);
}

export function createApp(options: AppOptions = {}) {
	const app = createRouter<AppEnv>();

	app.use(requestContext());
	app.use(accessLog());
	app.use(securityHeaders());
	const corsByOrigins = new Map<string, MiddlewareHandler>();
	app.use(async function cors(c, next) {
		const origins = config(c.env).CORS_ORIGINS;
		let policy = corsByOrigins.get(origins);
		if (!policy) {
			policy = corsPolicy({ origins });
			corsByOrigins.set(origins, policy);
		}
		return policy(c, next);
	});
	app.use(headerLimit({ maxBytes: MAX_HEADER_BYTES }));

	app.route("/", systemRoutes());
	// Public: deliveries are authenticated by the endpoint's signature scheme, not by a tenant credential.
	app.route("/", ingestRoutes());

	// Protected route groups: the guards are attached where the group is mounted, never route by route.
	const v1 = createRouter<AppEnv>();
	v1.use("/me", ...protect("api:read", options));
	v1.openapi(me, (c) => {
		const p = c.var.principal;
		return c.json({ tenantId: p.tenantId, actor: p.actor, via: p.via, tier: p.tier, scopes: p.scopes }, 200);
	});
	v1.use("/admin/*", ...protect("admin", options));
	v1.route("/admin", adminRoutes());
	v1.route("/admin", providerKeyRoutes());
	v1.route("/admin", breakerRoutes());
	v1.use("/webhooks/*", ...protect("webhooks:manage", options, "webhooks"));
	v1.route("/webhooks", webhookRoutes());
	v1.use("/audit/*", ...protect("admin", options));
	v1.route("/audit", auditRoutes());
	// The OpenAI-compatible LLM routes (errors in OpenAI's shape, see onError) and the caller's usage report.
	for (const path of ["/chat/*", "/embeddings", "/models", "/usage/*"]) {
		v1.use(path, ...protect("llm", options, "llm"));
	}
	v1.route("/", llmRoutes());
	v1.route("/usage", usageRoutes());
	app.route("/v1", v1);

	app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
		type: "http",
		scheme: "bearer",
		description: "A JWT, or an Edgeway API key (`ew_…`, also accepted in `x-api-key`)",
	});
	app.doc31("/openapi.json", {
		openapi: "3.1.0",
		info: { title: "Edgeway", version: "0.1.0", description: "Multi-tenant edge gateway" },
	});
	// A newcomer opening the gateway's address in a browser lands on the docs, not on a 404.
	app.get("/", (c) => c.redirect("/docs", 302));
	app.get("/docs", (c) => {
		c.header(
			"content-security-policy",
			"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
		);
		return c.html(DOCS_HTML);
	});

	const methodsFor = allowedMethods(app as never);
	app.notFound((c) => {
		const allowed = methodsFor(c.req.path);
		if (allowed.length > 0 && !allowed.includes(c.req.method)) {
			const error = new ApiError("method-not-allowed", `${c.req.method} is not allowed here.`, {
				headers: { allow: allowed.join(", ") },
			});
			return renderError(c, error);
		}
		return renderError(c, new ApiError("not-found", `No route for ${c.req.method} ${c.req.path}.`));
	});

	app.onError((err, c) => {
		const error = toApiError(err);
		if (error.status >= 500) {
			log("error", "request failed", {
				code: error.code,
				reason: error.reason,
				requestId: c.var.requestId,
				traceId: c.var.trace?.traceId,
			});
		} else if (error.reason) {
			log("info", "request refused", { code: error.code, reason: error.reason, requestId: c.var.requestId });
		}
		return renderError(c, error);
	});

	return app;
}
