export type { AppEnv, AuthVariables, Principal } from "./app-env";
export { type WaitUntil, waitUntil } from "./async";
export { limitBody, requireJsonBody } from "./body";
export {
	ApiError,
	type ApiErrorOptions,
	ERROR_STATUS,
	type ErrorCode,
	type FieldError,
	fieldErrors,
	PROBLEM_CONTENT_TYPE,
	problemResponse,
	toApiError,
} from "./errors";
export { corsPolicy, headerLimit, securityHeaders } from "./headers";
export { accessLog, type LogFields, log } from "./logger";
export { allowedMethods } from "./method-not-allowed";
export { BEARER, createRouter, jsonResponse, ProblemSchema, problems } from "./openapi";
export {
	checkOutboundUrl,
	type GuardedFetchOptions,
	guardedFetch,
	type OutboundUrlCheck,
	OutboundUrlError,
	type OutboundUrlOptions,
	type OutboundUrlRefusal,
} from "./outbound-url";
export {
	formatTraceparent,
	parseTraceparent,
	type RequestContextVariables,
	requestContext,
	type TraceContext,
} from "./request-context";
