/** Security headers, CORS and the request-header size guard. */
import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { secureHeaders } from "hono/secure-headers";
import { ApiError } from "./errors";

/** Strict defaults for an API: no framing, no sniffing, no referrer, HSTS. A handler's own header wins (the docs page's CSP). */
export function securityHeaders(): MiddlewareHandler {
	return secureHeaders({
		overwrite: false,
		contentSecurityPolicy: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
		crossOriginResourcePolicy: "same-origin",
		xFrameOptions: "DENY",
		referrerPolicy: "no-referrer",
		strictTransportSecurity: "max-age=31536000; includeSubDomains",
	});
}

export interface CorsOptions {
	/** `*`, a comma-separated list of origins, or empty to send no CORS headers. */
	origins: string;
}

/** Configurable CORS. Credentials are headers (Authorization / x-api-key), never cookies. */
export function corsPolicy(options: CorsOptions): MiddlewareHandler {
	const list = options.origins
		.split(",")
		.map((o) => o.trim())
		.filter(Boolean);
	if (list.length === 0) {
		return async function noCors(_c, next) {
			await next();
		};
	}
	return cors({
		origin: list.includes("*") ? "*" : list,
		allowMethods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
		allowHeaders: ["authorization", "content-type", "x-api-key", "x-request-id", "traceparent"],
		exposeHeaders: ["x-request-id", "traceparent", "ratelimit", "ratelimit-policy", "retry-after"],
		maxAge: 600,
	});
}

export interface HeaderLimitOptions {
	/** Total bytes of header names and values allowed. */
	maxBytes: number;
}

/** Refuses requests whose headers add up to more than `maxBytes` with 431. */
export function headerLimit(options: HeaderLimitOptions): MiddlewareHandler {
	if (!(options.maxBytes > 0)) throw new Error("headerLimit: maxBytes must be positive");
	return async function headerLimit(c, next) {
		let total = 0;
		for (const [name, value] of c.req.raw.headers) total += name.length + value.length + 4;
		if (total > options.maxBytes) {
			throw new ApiError("headers-too-large", `Request headers exceed ${options.maxBytes} bytes.`);
		}
		await next();
	};
}
