/**
 * `GET /v1/usage`: the caller's tenant's LLM usage between two UTC days, by day, model and provider,
 * with totals. One GROUP BY over `llm_usage` (indexed by tenant, day, model); always the caller's
 * tenant, whatever the query says.
 */
import { createRoute, type RouteHandler, z } from "@hono/zod-openapi";
import { and, eq, gte, lte, or, sql } from "drizzle-orm";
import { database, llmUsage } from "../db";
import { ApiError, type AppEnv, BEARER, createRouter, jsonResponse, problems } from "../http";

/** Longest span one report covers, both ends included. */
export const MAX_USAGE_RANGE_DAYS = 366;

const DAY_MS = 86_400_000;

const Day = z
	.string()
	.regex(/^\d{4}-\d{2}-\d{2}$/, "a date as YYYY-MM-DD")
	.refine((v) => isCalendarDay(v), "not a calendar date")
	.openapi({ example: "2026-01-31" });

const Totals = z.object({
	requests: z.number().int(),
	promptTokens: z.number().int(),
	completionTokens: z.number().int(),
	costMicroUsd: z.number().int(),
	cacheHits: z.number().int(),
});

const UsageRowSchema = Totals.extend({
	day: z.string(),
	model: z.string().nullable().openapi({ description: "The model that served; null when none did" }),
	provider: z.string().nullable(),
	estimatedRequests: z.number().int().openapi({ description: "Requests whose tokens are the gateway's estimate" }),
}).openapi("UsageRow");

export const UsageReportSchema = z
	.object({
		tenantId: z.string(),
		from: z.string(),
		to: z.string(),
		totals: Totals,
		days: z.array(UsageRowSchema),
	})
	.openapi("UsageReport");
export type UsageReport = z.infer<typeof UsageReportSchema>;

export const getUsage = createRoute({
	method: "get",
	path: "/",
	summary: "The caller's tenant's LLM usage by UTC day, model and provider",
	security: BEARER,
	request: {
		query: z.object({
			from: Day.optional().openapi({
				description: "First day, included (UTC). Default: the first day of `to`'s month, or of the current month",
			}),
			to: Day.optional().openapi({
				description: `Last day, included (UTC); at most ${MAX_USAGE_RANGE_DAYS} days after \`from\`. Default: the last day of \`from\`'s month, or of the current month`,
			}),
			model: z
				.string()
				.min(1)
				.max(256)
				.optional()
				.openapi({ description: "Only requests served by this model or asking for this alias / target" }),
		}),
	},
	responses: {
		200: jsonResponse(UsageReportSchema, "Usage totals and rows by day, model and provider"),
		...problems(400, 401, 403, 429),
	},
});

function isCalendarDay(v: string): boolean {
	const t = Date.parse(`${v}T00:00:00Z`);
	return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === v;
}

const iso = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const monthStart = (ms: number) => {
	const d = new Date(ms);
	return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
};
const monthEnd = (ms: number) => {
	const d = new Date(ms);
	return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0);
};

/** The report's days: given ones, defaults from the other end's month (or the current month), then checked. */
export function usageRange(query: { from?: string; to?: string }, now = Date.now()): { from: string; to: string } {
	const anchor = query.from ?? query.to;
	const base = anchor ? Date.parse(`${anchor}T00:00:00Z`) : now;
	const from = query.from ?? iso(monthStart(base));
	const to = query.to ?? iso(monthEnd(base));
	const span = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / DAY_MS + 1;
	if (span < 1) {
		throw new ApiError("validation-failed", "The request is not valid.", {
			errors: [{ path: "query.to", message: "to is before from" }],
		});
	}
	if (span > MAX_USAGE_RANGE_DAYS) {
		throw new ApiError("validation-failed", "The request is not valid.", {
			errors: [{ path: "query.to", message: `at most ${MAX_USAGE_RANGE_DAYS} days from from` }],
		});
	}
	return { from, to };
}

const usageHandler: RouteHandler<typeof getUsage, AppEnv> = async (c) => {
	const query = c.req.valid("query");
	const { from, to } = usageRange(query);
	const tenantId = c.var.principal.tenantId;
	const rows = await database(c.env.DB)
		.select({
			day: llmUsage.day,
			model: llmUsage.model,
			provider: llmUsage.provider,
			requests: sql<number>`count(*)`.mapWith(Number),
			promptTokens: sql<number>`sum(${llmUsage.promptTokens})`.mapWith(Number),
			completionTokens: sql<number>`sum(${llmUsage.completionTokens})`.mapWith(Number),
			costMicroUsd: sql<number>`sum(${llmUsage.costMicroUsd})`.mapWith(Number),
			cacheHits: sql<number>`sum(${llmUsage.cacheHit})`.mapWith(Number),
			estimatedRequests: sql<number>`sum(${llmUsage.estimated})`.mapWith(Number),
		})
		.from(llmUsage)
		.where(
			and(
				eq(llmUsage.tenantId, tenantId),
				gte(llmUsage.day, from),
				lte(llmUsage.day, to),
				query.model ? or(eq(llmUsage.model, query.model), eq(llmUsage.requested, query.model)) : undefined,
			),
		)
		.groupBy(llmUsage.day, llmUsage.model, llmUsage.provider)
		.orderBy(llmUsage.day, llmUsage.model, llmUsage.provider)
		.all();
	const totals = { requests: 0, promptTokens: 0, completionTokens: 0, costMicroUsd: 0, cacheHits: 0 };
	for (const row of rows) {
		totals.requests += row.requests;
		totals.promptTokens += row.promptTokens;
		totals.completionTokens += row.completionTokens;
		totals.costMicroUsd += row.costMicroUsd;
		totals.cacheHits += row.cacheHits;
	}
	return c.json({ tenantId, from, to, totals, days: rows }, 200);
};

/** The usage API, to be mounted at `/v1/usage` behind authentication. */
export function usageRoutes() {
	return createRouter<AppEnv>().openapi(getUsage, usageHandler);
}
