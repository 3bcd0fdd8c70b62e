/**
 * Errors on the OpenAI-compatible routes are rendered in OpenAI's shape, `{ error: { message, type,
 * param, code } }`, with the same status codes, so the official clients raise their typed errors
 * (AuthenticationError on 401, RateLimitError on 429, …). Everything else in the gateway answers RFC
 * 9457 problems; app.ts picks the renderer by path (isOpenAiPath, routes.ts). Errors inside an event
 * stream are the same body, as an SSE event. The request id still goes out in a header.
 */
import type { Context } from "hono";
import type { ApiError } from "../http";

function typeOf(status: number): string {
	if (status === 401) return "authentication_error";
	if (status === 403) return "permission_error";
	if (status === 404) return "not_found_error";
	if (status === 429) return "rate_limit_error";
	if (status >= 500) return "api_error";
	return "invalid_request_error";
}

/** OpenAI's error object for an ApiError (codes in snake_case: `model_not_found`, `content_blocked`, …). */
export function openAiErrorBody(error: ApiError): {
	error: { message: string; type: string; param: string | null; code: string };
} {
	return {
		error: {
			message: error.message,
			type: typeOf(error.status),
			param: error.errors?.[0]?.path ?? null,
			code: error.code.replaceAll("-", "_"),
		},
	};
}

export function openAiErrorResponse(c: Context, error: ApiError): Response {
	return c.body(JSON.stringify(openAiErrorBody(error)), error.status, {
		...error.headers,
		"content-type": "application/json",
	});
}
