/** Dead-letter admin API handlers: tenant-scoped reads and audited, idempotent replays. */
import type { createRoute, RouteHandler } from "@hono/zod-openapi";
import type { Context } from "hono";
import { type DeadLetter, database } from "../db";
import { ApiError, type AppEnv } from "../http";
import type * as routes from "./routes";
import * as store from "./store";

type H<R extends Parameters<typeof createRoute>[0]> = RouteHandler<R, AppEnv>;

function view(row: DeadLetter) {
	return {
		id: row.id,
		eventId: row.eventId,
		tenantId: row.tenantId,
		type: row.type,
		status: row.status,
		attempts: row.attempts,
		error: row.error,
		replayable: store.isReplayable(row),
		createdAt: row.createdAt,
		replayedAt: row.replayedAt,
	};
}

function replayActor(c: Context<AppEnv>): store.ReplayActor {
	return { tenantId: c.var.principal.tenantId, actor: c.var.principal.actor, requestId: c.var.requestId };
}

async function loadOwn(c: Context<AppEnv>, id: string): Promise<DeadLetter> {
	// Always the caller's tenant: another tenant's id is indistinguishable from one that does not exist.
	const row = await store.getDeadLetter(database(c.env.DB), c.var.principal.tenantId, id);
	if (!row) throw new ApiError("not-found", "No such dead letter.");
	return row;
}

export const listDeadLetters: H<typeof routes.listDeadLetters> = async (c) => {
	const { status, limit, cursor } = c.req.valid("query");
	const page = await store.listDeadLetters(database(c.env.DB), c.var.principal.tenantId, { status, limit, cursor });
	return c.json({ deadLetters: page.items.map(view), nextCursor: page.nextCursor }, 200);
};

export const getDeadLetter: H<typeof routes.getDeadLetter> = async (c) => {
	const { id } = c.req.valid("param");
	const row = await loadOwn(c, id);
	return c.json({ ...view(row), event: row.event }, 200);
};

export const replayDeadLetter: H<typeof routes.replayDeadLetter> = async (c) => {
	const { id } = c.req.valid("param");
	const result = await store.replayDeadLetters(c.env, replayActor(c), [id]);
	const skip = result.skipped[0];
	if (skip?.reason === "not-found") throw new ApiError("not-found", "No such dead letter.");
	if (skip?.reason === "not-replayable") {
		throw new ApiError("conflict", "This dead letter is not a valid event and cannot be replayed.");
	}
	const row = result.replayed[0] ?? (await loadOwn(c, id));
	return c.json({ replayed: result.replayed.length > 0, deadLetter: view(row) }, 200);
};

export const replayDeadLetters: H<typeof routes.replayDeadLetters> = async (c) => {
	const body = c.req.valid("json");
	const db = database(c.env.DB);
	const selection =
		"ids" in body
			? { ids: body.ids, more: false }
			: await store.deadLetterIdsToReplay(db, c.var.principal.tenantId, body.limit);
	const result = await store.replayDeadLetters(c.env, replayActor(c), selection.ids);
	return c.json({ replayed: result.replayed.map((r) => r.id), skipped: result.skipped, more: selection.more }, 200);
};
