/** A tenant's dead letters: pages of them, one of them, and audited replays onto the events queue. */
import { and, asc, desc, eq, inArray, lt, ne, or } from "drizzle-orm";
import { appendAudit } from "../audit";
import { type Database, type DeadLetter, database, deadLetters } from "../db";
import { EventEnvelopeSchema, INVALID_EVENT_TYPE, publish } from "../events";
import { ApiError, log } from "../http";
import { errorText, fromBase64Text, toBase64Url } from "../lib";

/** Most dead letters replayed by one call. */
export const MAX_REPLAY_BATCH = 100;

const MAX_IDS_PER_QUERY = 90;

export type DeadLetterStatus = DeadLetter["status"];

function chunks<T>(items: T[], size = MAX_IDS_PER_QUERY): T[][] {
	const out: T[][] = [];
	for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
	return out;
}

/** Whether a stored dead letter holds an event that can be published again. */
export function isReplayable(row: Pick<DeadLetter, "type" | "event">): boolean {
	return row.type !== INVALID_EVENT_TYPE && EventEnvelopeSchema.safeParse(row.event).success;
}

export interface DeadLetterPage {
	items: DeadLetter[];
	nextCursor: string | null;
}

interface Cursor {
	createdAt: number;
	id: string;
}

function encodeCursor(c: Cursor): string {
	return toBase64Url(`${c.createdAt}:${c.id}`);
}

function decodeCursor(value: string): Cursor {
	const m = /^(\d{1,16}):(dl_[0-9a-f]{32})$/.exec(fromBase64Text(value) ?? "");
	if (m?.[1] && m[2]) return { createdAt: Number(m[1]), id: m[2] };
	throw new ApiError("validation-failed", "The cursor is not valid.", {
		errors: [{ path: "query.cursor", message: "use nextCursor from a previous page" }],
	});
}

/** A tenant's dead letters, newest first, `limit` at a time. */
export async function listDeadLetters(
	db: Database,
	tenantId: string,
	options: { status?: DeadLetterStatus; limit: number; cursor?: string },
): Promise<DeadLetterPage> {
	const conditions = [eq(deadLetters.tenantId, tenantId)];
	if (options.status) conditions.push(eq(deadLetters.status, options.status));
	if (options.cursor) {
		const c = decodeCursor(options.cursor);
		const before = or(
			lt(deadLetters.createdAt, c.createdAt),
			and(eq(deadLetters.createdAt, c.createdAt), lt(deadLetters.id, c.id)),
		);
		if (before) conditions.push(before);
	}
	const rows = await db
		.select()
		.from(deadLetters)
		.where(and(...conditions))
		.orderBy(desc(deadLetters.createdAt), desc(deadLetters.id))
		.limit(options.limit + 1)
		.all();
	const items = rows.slice(0, options.limit);
	const last = items.at(-1);
	return {
		items,
		nextCursor: rows.length > options.limit && last ? encodeCursor({ createdAt: last.createdAt, id: last.id }) : null,
	};
}

/** One of a tenant's dead letters; another tenant's id is simply not found. */
export async function getDeadLetter(db: Database, tenantId: string, id: string): Promise<DeadLetter | undefined> {
	return db
		.select()
		.from(deadLetters)
		.where(and(eq(deadLetters.id, id), eq(deadLetters.tenantId, tenantId)))
		.get();
}

/** The ids of a tenant's oldest replayable dead letters, and whether more remain. */
export async function deadLetterIdsToReplay(
	db: Database,
	tenantId: string,
	limit: number,
): Promise<{ ids: string[]; more: boolean }> {
	const rows = await db
		.select({ id: deadLetters.id })
		.from(deadLetters)
		.where(
			and(eq(deadLetters.tenantId, tenantId), eq(deadLetters.status, "dead"), ne(deadLetters.type, INVALID_EVENT_TYPE)),
		)
		.orderBy(asc(deadLetters.createdAt), asc(deadLetters.id))
		.limit(limit + 1)
		.all();
	return { ids: rows.slice(0, limit).map((r) => r.id), more: rows.length > limit };
}

/** Who is replaying: the audit record's tenant, actor and request. */
export interface ReplayActor {
	tenantId: string;
	actor: string;
	requestId?: string;
}

export type ReplaySkipReason = "not-found" | "already-replayed" | "not-replayable";

export interface ReplayResult {
	/** The dead letters this call re-published, now "replayed". */
	replayed: DeadLetter[];
	skipped: Array<{ id: string; reason: ReplaySkipReason }>;
}

/**
 * Re-publishes the events of some of the caller's dead letters, each the same event with the same id,
 * so handlers that already succeeded skip it and only the failed ones run. A dead letter is claimed
 * ("dead" → "replayed") before its event is published, so concurrent or repeated replays publish it
 * once; if the queue refuses, the claims are undone and nothing is audited. Every replay is audited.
 */
export async function replayDeadLetters(
	env: Pick<Env, "DB" | "EVENTS">,
	who: ReplayActor,
	ids: string[],
): Promise<ReplayResult> {
	const db = database(env.DB);
	const wanted = [...new Set(ids)].slice(0, MAX_REPLAY_BATCH);
	const rows = new Map<string, DeadLetter>();
	for (const part of chunks(wanted)) {
		const found = await db
			.select()
			.from(deadLetters)
			.where(and(eq(deadLetters.tenantId, who.tenantId), inArray(deadLetters.id, part)))
			.all();
		for (const row of found) rows.set(row.id, row);
	}

	const skipped: ReplayResult["skipped"] = [];
	const candidates: string[] = [];
	for (const id of wanted) {
		const row = rows.get(id);
		if (!row) skipped.push({ id, reason: "not-found" });
		else if (row.status !== "dead") skipped.push({ id, reason: "already-replayed" });
		else if (!isReplayable(row)) skipped.push({ id, reason: "not-replayable" });
		else candidates.push(id);
	}
	if (candidates.length === 0) return { replayed: [], skipped };

	const now = Date.now();
	const claimed: DeadLetter[] = [];
	for (const part of chunks(candidates)) {
		claimed.push(
			...(await db
				.update(deadLetters)
				.set({ status: "replayed", replayedAt: now })
				.where(
					and(eq(deadLetters.tenantId, who.tenantId), eq(deadLetters.status, "dead"), inArray(deadLetters.id, part)),
				)
				.returning()
				.all()),
		);
	}
	const claimedIds = new Set(claimed.map((r) => r.id));
	for (const id of candidates) {
		// Another replay claimed it between the read and the update.
		if (!claimedIds.has(id)) skipped.push({ id, reason: "already-replayed" });
	}
	if (claimed.length === 0) return { replayed: [], skipped };
	claimed.sort((a, b) => a.createdAt - b.createdAt || a.id.localeCompare(b.id));

	try {
		await publish(
			env,
			claimed.map((r) => EventEnvelopeSchema.parse(r.event)),
		);
	} catch (err) {
		await releaseClaims(db, claimed, rows, now);
		throw new ApiError("dependency-unavailable", "The events queue did not accept the replay; try again.", {
			reason: errorText(err),
		});
	}

	try {
		await appendAudit(
			env.DB,
			claimed.map((r) => ({
				tenantId: who.tenantId,
				actor: who.actor,
				action: "dead_letter.replay",
				target: `dead_letter:${r.id}`,
				requestId: who.requestId ?? null,
				metadata: { eventId: r.eventId, type: r.type, attempts: r.attempts },
			})),
		);
	} catch (err) {
		// The events are already back on the queue: say loudly which replays have no audit record.
		log("error", "dead letter replayed without its audit record", {
			tenantId: who.tenantId,
			requestId: who.requestId,
			deadLetters: claimed.map((r) => r.id).join(","),
			error: errorText(err),
		});
		throw err;
	}
	return { replayed: claimed, skipped };
}

/** Puts claimed dead letters back to "dead" with their previous replay time. */
async function releaseClaims(db: Database, claimed: DeadLetter[], before: Map<string, DeadLetter>, claimedAt: number) {
	const [first, ...rest] = claimed.map((r) =>
		db
			.update(deadLetters)
			.set({ status: "dead", replayedAt: before.get(r.id)?.replayedAt ?? null })
			.where(and(eq(deadLetters.id, r.id), eq(deadLetters.status, "replayed"), eq(deadLetters.replayedAt, claimedAt))),
	);
	try {
		if (first) await db.batch([first, ...rest]);
	} catch (err) {
		log("error", "releasing dead-letter claims failed", {
			deadLetters: claimed.map((r) => r.id).join(","),
			error: errorText(err),
		});
	}
}
