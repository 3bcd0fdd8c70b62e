/** Audit API route definitions: the caller's tenant's records, and the check of its chain. Handlers are in handlers.ts. */
import { createRoute, z } from "@hono/zod-openapi";
import { BEARER, jsonResponse, problems } from "../http";
import { AUDIT_CURSOR_PATTERN } from "./read";

/** Largest page of `GET /v1/audit`. */
export const MAX_AUDIT_PAGE = 200;

export const AuditRecordSchema = z
	.object({
		id: z.number().int(),
		seq: z.number().int().nullable().openapi({ description: "Position in the tenant's chain; null before the chain" }),
		prevHash: z.string().nullable(),
		hash: z.string().nullable(),
		tenantId: z.string(),
		actor: z.string().openapi({ example: "jwt:ops" }),
		action: z.string().openapi({ example: "api_key.create" }),
		target: z.string().nullable(),
		requestId: z.string().nullable(),
		metadata: z.record(z.string(), z.unknown()).nullable(),
		createdAt: z.number().int(),
		eventId: z.string().nullable(),
	})
	.openapi("AuditRecord");

/** A time as milliseconds since the epoch or as an ISO 8601 date-time. */
const Instant = z
	.union([z.string().regex(/^\d{1,15}$/), z.iso.datetime({ offset: true })])
	.transform((v) => (/^\d+$/.test(v) ? Number(v) : Date.parse(v)))
	.openapi({ description: "Milliseconds since the epoch, or an ISO 8601 date-time", example: "2026-01-01T00:00:00Z" });

export const AuditVerificationSchema = z
	.object({
		ok: z.boolean(),
		records: z.number().int().openapi({ description: "Chained records found intact" }),
		firstBrokenSeq: z.number().int().optional(),
		reason: z.enum(["modified", "deleted", "inserted"]).optional().openapi({
			description:
				"modified: hash mismatch; deleted: seq gap or dangling prevHash; inserted: a record no writer chained",
		}),
		head: z
			.object({ seq: z.number().int(), hash: z.string() })
			.nullable()
			.openapi({ description: "The last intact record" }),
		unchained: z.number().int().openapi({ description: "Records written before the chain existed (not verified)" }),
	})
	.openapi("AuditVerification");

const errors = problems(400, 401, 403, 415, 429);

export const listAudit = createRoute({
	method: "get",
	path: "/",
	summary: "The caller's tenant's audit records, newest first",
	security: BEARER,
	request: {
		query: z.object({
			action: z.string().min(1).max(128).optional(),
			actor: z.string().min(1).max(256).optional(),
			since: Instant.optional().openapi({ description: "Created at or after" }),
			until: Instant.optional().openapi({ description: "Created before" }),
			cursor: z
				.string()
				.regex(AUDIT_CURSOR_PATTERN, "a nextCursor from a previous page")
				.optional()
				.openapi({ description: "nextCursor of the previous page" }),
			limit: z.coerce.number().int().min(1).max(MAX_AUDIT_PAGE).default(50),
		}),
	},
	responses: {
		200: jsonResponse(
			z.object({ records: z.array(AuditRecordSchema), nextCursor: z.string().nullable() }),
			"A page of records",
		),
		...errors,
	},
});

export const verifyAudit = createRoute({
	method: "get",
	path: "/verify",
	summary: "Check the caller's tenant's audit chain and report the first broken link",
	security: BEARER,
	responses: {
		200: jsonResponse(AuditVerificationSchema, "The result of the check"),
		...errors,
	},
});
