/** The OpenAPIHono factory every route group uses, with the one hook that turns zod failures into 400 problems. */
import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { Env as HonoEnv } from "hono";
import { ApiError, fieldErrors } from "./errors";

/** A router whose validation failures become `validation-failed` problems with field paths. */
export function createRouter<E extends HonoEnv>() {
	return new OpenAPIHono<E>({
		defaultHook: (result) => {
			if (!result.success) {
				throw new ApiError("validation-failed", "The request is not valid.", {
					errors: fieldErrors(result.error, result.target),
				});
			}
		},
	});
}

/** The RFC 9457 problem body, for route response schemas. */
export const ProblemSchema = z
	.object({
		type: z.string(),
		title: z.string(),
		status: z.number().int(),
		detail: z.string(),
		instance: z.string().openapi({ description: "The request's path, without its query" }),
		code: z.string(),
		requestId: z.string(),
		errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
	})
	.openapi("Problem");

/** Problem responses, by status, for `createRoute({ responses })`. */
export function problems(...statuses: number[]) {
	return Object.fromEntries(
		statuses.map((status) => [
			status,
			{ description: "Problem", content: { "application/problem+json": { schema: ProblemSchema } } },
		]),
	);
}

/** A JSON response, for `createRoute({ responses })`. */
export function jsonResponse<T extends z.ZodType>(schema: T, description: string) {
	return { description, content: { "application/json": { schema } } };
}

/** Routes that take a tenant credential (a JWT or an API key) as a bearer token. */
export const BEARER = [{ bearer: [] }];
