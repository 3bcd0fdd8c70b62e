/** Dead-letter admin route definitions (`/v1/admin/dead-letters…`). Handlers are in handlers.ts. */
import { createRoute, z } from "@hono/zod-openapi";
import { BEARER, jsonResponse, problems } from "../http";
import { MAX_REPLAY_BATCH } from "./store";

const DeadLetterId = z
	.string()
	.regex(/^dl_[0-9a-f]{32}$/, "a dead letter id such as dl_0123456789abcdef0123456789abcdef")
	.openapi({ example: "dl_0123456789abcdef0123456789abcdef" });

const Status = z.enum(["dead", "replayed"]);

export const DeadLetterSchema = z
	.object({
		id: DeadLetterId,
		eventId: z.string(),
		tenantId: z.string(),
		type: z.string(),
		status: Status,
		/** How many times the failing handlers failed the event. */
		attempts: z.number().int(),
		/** The last error of each failing handler, one per line (redacted). */
		error: z.string().nullable(),
		/** False for a message that was not a valid event: it is kept for inspection only. */
		replayable: z.boolean(),
		createdAt: z.number().int(),
		replayedAt: z.number().int().nullable(),
	})
	.openapi("DeadLetter");

export const DeadLetterDetailSchema = DeadLetterSchema.extend({
	event: z.unknown().openapi({ description: "The event envelope as it was published" }),
}).openapi("DeadLetterDetail");

const errors = problems(400, 401, 403, 404, 415, 429);
const IdParams = z.object({ id: DeadLetterId });

export const listDeadLetters = createRoute({
	method: "get",
	path: "/",
	summary: "List the caller's dead letters, newest first",
	security: BEARER,
	request: {
		query: z.object({
			status: Status.optional(),
			limit: z.coerce.number().int().min(1).max(100).default(50),
			cursor: z.string().min(1).max(200).optional(),
		}),
	},
	responses: {
		200: jsonResponse(
			z.object({ deadLetters: z.array(DeadLetterSchema), nextCursor: z.string().nullable() }),
			"A page of dead letters",
		),
		...errors,
	},
});

export const getDeadLetter = createRoute({
	method: "get",
	path: "/{id}",
	summary: "Inspect a dead letter, with its event",
	security: BEARER,
	request: { params: IdParams },
	responses: { 200: jsonResponse(DeadLetterDetailSchema, "The dead letter"), ...errors },
});

export const replayDeadLetter = createRoute({
	method: "post",
	path: "/{id}/replay",
	summary: "Publish a dead letter's event again (idempotent: a replayed one is not published twice)",
	security: BEARER,
	request: { params: IdParams },
	responses: {
		200: jsonResponse(
			z.object({
				/** False when it had already been replayed and this call changed nothing. */
				replayed: z.boolean(),
				deadLetter: DeadLetterSchema,
			}),
			"The dead letter after the replay",
		),
		...errors,
		...problems(409, 503),
	},
});

export const replayDeadLetters = createRoute({
	method: "post",
	path: "/replay",
	summary: `Replay dead letters in bulk: by id, or the oldest "dead" ones (at most ${MAX_REPLAY_BATCH} per call)`,
	security: BEARER,
	request: {
		body: {
			required: true,
			content: {
				"application/json": {
					schema: z.union([
						z.object({ ids: z.array(DeadLetterId).min(1).max(MAX_REPLAY_BATCH) }).strict(),
						z
							.object({
								all: z.literal(true),
								limit: z.number().int().min(1).max(MAX_REPLAY_BATCH).default(MAX_REPLAY_BATCH),
							})
							.strict(),
					]),
				},
			},
		},
	},
	responses: {
		200: jsonResponse(
			z.object({
				replayed: z.array(DeadLetterId),
				skipped: z.array(
					z.object({ id: DeadLetterId, reason: z.enum(["not-found", "already-replayed", "not-replayable"]) }),
				),
				/** With `all`: whether more "dead" ones remain for another call. */
				more: z.boolean(),
			}),
			"What was replayed and what was skipped",
		),
		...errors,
		...problems(503),
	},
});
