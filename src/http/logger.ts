/** Structured JSON logging: one line per request, and a `log` helper for everything else. */
import type { MiddlewareHandler } from "hono";
import type { RequestContextVariables } from "./request-context";

type Level = "debug" | "info" | "warn" | "error";

/** Fields a log line may carry. Never put a credential, secret or request body here. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** Writes one JSON log line. */
export function log(level: Level, msg: string, fields: LogFields = {}): void {
	const line = JSON.stringify({ level, msg, time: new Date().toISOString(), ...fields });
	if (level === "error") console.error(line);
	else if (level === "warn") console.warn(line);
	else console.log(line);
}

export interface AccessLogVariables extends RequestContextVariables {
	/** Set by authentication once the tenant is known. */
	tenantId?: string;
}

/** One JSON line per request: method, route pattern, status, duration, tenant, requestId, traceId. */
export function accessLog(): MiddlewareHandler<{ Variables: AccessLogVariables }> {
	return async function accessLog(c, next) {
		await next();
		log(c.res.status >= 500 ? "error" : "info", "request", {
			method: c.req.method,
			route: c.req.routePath,
			status: c.res.status,
			durationMs: Math.round((performance.now() - c.var.startedAt) * 1000) / 1000,
			tenantId: c.var.tenantId,
			requestId: c.var.requestId,
			traceId: c.var.trace.traceId,
		});
	};
}
