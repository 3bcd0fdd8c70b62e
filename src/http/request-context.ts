/** Request id and W3C trace context: accepted or started, echoed, and kept on the context. */
import type { MiddlewareHandler } from "hono";
import { randomHex } from "../lib";

export interface TraceContext {
	traceId: string;
	/** The span id the gateway uses for itself and sends downstream as parent-id. */
	spanId: string;
	/** The caller's span id, when a valid traceparent came in. */
	parentSpanId: string | undefined;
	flags: string;
}

export interface RequestContextVariables {
	requestId: string;
	trace: TraceContext;
	startedAt: number;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

/** Parses a traceparent header (version 00 rules; unknown versions are read as 00 per the spec). */
export function parseTraceparent(value: string | undefined | null): TraceContext | undefined {
	if (!value) return undefined;
	const m = TRACEPARENT.exec(value.trim().toLowerCase());
	if (!m) return undefined;
	const [, version, traceId, parentSpanId, flags] = m as unknown as [string, string, string, string, string];
	if (version === "ff" || traceId === ZERO_TRACE || parentSpanId === ZERO_SPAN) return undefined;
	return { traceId, parentSpanId, spanId: randomHex(8), flags };
}

/** The traceparent to send to anything the gateway calls on behalf of this request. */
export function formatTraceparent(trace: TraceContext): string {
	return `00-${trace.traceId}-${trace.spanId}-${trace.flags}`;
}

/** Accepts a well-formed `X-Request-Id` or makes one; accepts or starts a `traceparent`; echoes both. */
export function requestContext(): MiddlewareHandler<{ Variables: RequestContextVariables }> {
	return async function requestContext(c, next) {
		c.set("startedAt", performance.now());
		const incoming = c.req.header("x-request-id");
		const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
		const trace = parseTraceparent(c.req.header("traceparent")) ?? {
			traceId: randomHex(16),
			spanId: randomHex(8),
			parentSpanId: undefined,
			flags: "01",
		};
		c.set("requestId", requestId);
		c.set("trace", trace);
		c.header("x-request-id", requestId);
		c.header("traceparent", formatTraceparent(trace));
		await next();
	};
}
