/** Request body guards: a size limit enforced while the body streams in, JSON content type, and JSON nesting depth. */
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { exceedsJsonDepth, MAX_JSON_DEPTH } from "../lib";
import { ApiError } from "./errors";

function tooLarge(maxBytes: number): never {
	throw new ApiError("payload-too-large", `The request body exceeds ${maxBytes} bytes.`);
}

/**
 * Limits the body to `maxBytes(c)` bytes. A declared Content-Length over the limit is refused
 * before reading; a chunked body is counted as it streams and refused the moment it passes the limit,
 * so no more than the limit is ever buffered.
 */
export function limitBody(maxBytes: (c: Parameters<MiddlewareHandler>[0]) => number): MiddlewareHandler {
	const limiters = new Map<number, MiddlewareHandler>();
	return async function limitBody(c, next) {
		const max = maxBytes(c);
		let limiter = limiters.get(max);
		if (!limiter) {
			limiter = bodyLimit({ maxSize: max, onError: () => tooLarge(max) });
			limiters.set(max, limiter);
		}
		return limiter(c, next);
	};
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/**
 * Requests that carry a body must declare JSON (anything else is 415) and nest no deeper than
 * {@link MAX_JSON_DEPTH} (deeper is 400 `bad-request`). The body is read here, once, as text; Hono
 * keeps that text, and the route's JSON validator parses it from there, so every JSON route is
 * bounded in this one place. Mount it after {@link limitBody}, which bounds what this buffers.
 */
export function requireJsonBody(): MiddlewareHandler {
	return async function requireJsonBody(c, next) {
		const hasBody =
			c.req.raw.body !== null &&
			(c.req.header("content-length") !== "0" || c.req.header("transfer-encoding") !== undefined);
		if (hasBody && !JSON_TYPE.test(c.req.header("content-type") ?? "")) {
			throw new ApiError("unsupported-media-type", "Send the body as application/json.");
		}
		if (hasBody && exceedsJsonDepth(await c.req.text())) {
			throw new ApiError("bad-request", `The JSON body nests deeper than ${MAX_JSON_DEPTH} levels.`);
		}
		await next();
	};
}
