/** The one error type of the gateway, its closed set of codes and the RFC 9457 problem renderer. */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";

/** Every public error code and the HTTP status it is rendered with. The only such table. */
export const ERROR_STATUS = {
	"bad-request": 400,
	"validation-failed": 400,
	"content-blocked": 400,
	"malformed-json": 400,
	"invalid-token": 401,
	"invalid-signature": 401,
	forbidden: 403,
	"insufficient-scope": 403,
	"tier-not-allowed": 403,
	"tenant-suspended": 403,
	"not-found": 404,
	"model-not-found": 404,
	"method-not-allowed": 405,
	conflict: 409,
	gone: 410,
	"payload-too-large": 413,
	"unsupported-media-type": 415,
	"rate-limited": 429,
	"quota-exceeded": 429,
	"budget-exceeded": 429,
	"headers-too-large": 431,
	internal: 500,
	"upstream-error": 502,
	"limiter-unavailable": 503,
	"dependency-unavailable": 503,
	"upstream-unavailable": 503,
	"upstream-timeout": 504,
} as const satisfies Record<string, ContentfulStatusCode>;

export type ErrorCode = keyof typeof ERROR_STATUS;

const TITLES: Record<ErrorCode, string> = {
	"bad-request": "Bad request",
	"validation-failed": "Request validation failed",
	"content-blocked": "Content blocked by a guardrail",
	"malformed-json": "Malformed JSON body",
	"invalid-token": "Invalid credentials",
	"invalid-signature": "Invalid webhook signature",
	forbidden: "Forbidden",
	"insufficient-scope": "Insufficient scope",
	"tier-not-allowed": "Not allowed on this tier",
	"tenant-suspended": "Tenant suspended",
	"not-found": "Not found",
	"model-not-found": "Model not found",
	"method-not-allowed": "Method not allowed",
	conflict: "Conflict",
	gone: "Gone",
	"payload-too-large": "Payload too large",
	"unsupported-media-type": "Unsupported media type",
	"rate-limited": "Rate limit exceeded",
	"quota-exceeded": "Quota exceeded",
	"budget-exceeded": "LLM budget exceeded",
	"headers-too-large": "Request headers too large",
	internal: "Internal error",
	"upstream-error": "Upstream error",
	"limiter-unavailable": "Admission control unavailable",
	"dependency-unavailable": "Dependency unavailable",
	"upstream-unavailable": "No upstream available",
	"upstream-timeout": "Upstream timed out",
};

/** One field-level problem, as in the `errors` member of a validation problem. */
export interface FieldError {
	path: string;
	message: string;
}

export interface ApiErrorOptions {
	/** Response headers to send with the problem (WWW-Authenticate, Retry-After, RateLimit…). */
	headers?: Record<string, string>;
	errors?: FieldError[];
	/** Logged, never sent: the precise internal reason. */
	reason?: string;
}

/** A failure with a public code. Thrown anywhere; rendered only by {@link renderError}. */
export class ApiError extends Error {
	readonly code: ErrorCode;
	readonly status: ContentfulStatusCode;
	readonly headers: Record<string, string>;
	readonly errors: FieldError[] | undefined;
	readonly reason: string | undefined;

	constructor(code: ErrorCode, detail?: string, options: ApiErrorOptions = {}) {
		super(detail ?? TITLES[code]);
		this.name = "ApiError";
		this.code = code;
		this.status = ERROR_STATUS[code];
		this.headers = options.headers ?? {};
		this.errors = options.errors;
		this.reason = options.reason;
	}
}

/** zod issues → field errors with dotted paths (`body.scopes.0`). */
export function fieldErrors(error: z.ZodError, prefix?: string): FieldError[] {
	return error.issues.map((issue) => ({
		path: [prefix, ...issue.path.map(String)].filter(Boolean).join("."),
		message: issue.message,
	}));
}

const STATUS_CODES: Partial<Record<number, ErrorCode>> = {
	400: "bad-request",
	401: "invalid-token",
	403: "forbidden",
	404: "not-found",
	405: "method-not-allowed",
	413: "payload-too-large",
	415: "unsupported-media-type",
	429: "rate-limited",
	431: "headers-too-large",
	503: "dependency-unavailable",
};

/**
 * The headers of an HTTPException's response that say how to retry or authenticate, carried over to the
 * problem that stands in for it. An allow-list: any other header of the exception (its body's, or one
 * that would replace the request id, CORS, RateLimit or security headers already on the context) is dropped.
 */
const EXCEPTION_HEADERS = ["www-authenticate", "retry-after", "allow"] as const;

function exceptionHeaders(err: HTTPException): Record<string, string> {
	const headers: Record<string, string> = {};
	for (const name of EXCEPTION_HEADERS) {
		const value = err.res?.headers.get(name);
		if (value) headers[name] = value;
	}
	return headers;
}

/** Turns anything thrown into an ApiError; unknown errors become a generic `internal`. */
export function toApiError(err: unknown): ApiError {
	if (err instanceof ApiError) return err;
	if (err instanceof z.ZodError) {
		return new ApiError("validation-failed", undefined, { errors: fieldErrors(err) });
	}
	if (err instanceof HTTPException) {
		if (err.status === 400 && /json/i.test(err.message)) {
			return new ApiError("malformed-json", "The request body is not valid JSON.");
		}
		const code = STATUS_CODES[err.status];
		if (code) return new ApiError(code, undefined, { headers: exceptionHeaders(err), reason: err.message });
	}
	return new ApiError("internal", "An unexpected error occurred.", {
		reason: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
	});
}

export const PROBLEM_CONTENT_TYPE = "application/problem+json";

/**
 * Renders an ApiError as RFC 9457 problem JSON with `code` and `requestId`. `instance` is the request's path as
 * sent (percent-encoded; never its query, which may carry secrets): the route that failed, beside `requestId`
 * (also the `x-request-id` header and a field of the request's log lines), which finds this occurrence.
 */
export function problemResponse(c: Context, error: ApiError): Response {
	const requestId = c.get("requestId") as string | undefined;
	const body = {
		type: `https://edgeway.dev/problems/${error.code}`,
		title: TITLES[error.code],
		status: error.status,
		detail: error.message,
		instance: new URL(c.req.url).pathname,
		code: error.code,
		requestId,
		...(error.errors ? { errors: error.errors } : {}),
	};
	// c.body keeps headers already prepared on the context (request id, RateLimit, CORS).
	return c.body(JSON.stringify(body), error.status, {
		...error.headers,
		"content-type": PROBLEM_CONTENT_TYPE,
	});
}
