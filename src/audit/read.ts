/** Reading the audit log: one tenant's records, newest first, page by page; and the check of its chain. */
import { and, desc, eq, gte, isNotNull, isNull, lt, type SQL, sql } from "drizzle-orm";
import { auditLog, database } from "../db";
import { type ChainReport, ChainVerifier, type StoredRecord } from "./chain";
import type { PendingRecord } from "./store";

/** A page position: `s<seq>` within the chain, `l<id>` among the records written before the chain existed. */
export const AUDIT_CURSOR_PATTERN = /^[sl]\d{1,15}$/;

export interface AuditListOptions {
	/** Records per page. */
	limit: number;
	/** `nextCursor` of the previous page. */
	cursor?: string;
	action?: string;
	actor?: string;
	/** Records created at or after this time (ms). */
	since?: number;
	/** Records created before this time (ms). */
	until?: number;
}

/** A record as listed: its fields plus its place in the chain. */
export interface AuditListItem extends PendingRecord {
	id: number;
	/** Null for records written before the chain existed: listed, never verified. */
	seq: number | null;
	prevHash: string | null;
	hash: string | null;
}

export interface AuditPage {
	records: AuditListItem[];
	nextCursor: string | null;
}

const listColumns = {
	id: auditLog.id,
	seq: auditLog.seq,
	prevHash: auditLog.prevHash,
	hash: auditLog.hash,
	tenantId: auditLog.tenantId,
	actor: auditLog.actor,
	action: auditLog.action,
	target: auditLog.target,
	requestId: auditLog.requestId,
	// The JSON text as stored: a record tampered into invalid JSON must not break the listing.
	metadata: sql<string | null>`${auditLog.metadata}`,
	createdAt: auditLog.createdAt,
	eventId: auditLog.eventId,
};

function parseMetadata(text: string | null): Record<string, unknown> | null {
	if (text === null) return null;
	try {
		const value: unknown = JSON.parse(text);
		return value !== null && typeof value === "object" && !Array.isArray(value)
			? (value as Record<string, unknown>)
			: null;
	} catch {
		return null;
	}
}

function parseCursor(cursor: string | undefined): { seq: number } | { id: number } | undefined {
	if (cursor === undefined) return undefined;
	if (!AUDIT_CURSOR_PATTERN.test(cursor)) throw new RangeError(`not an audit cursor: ${cursor}`);
	const n = Number(cursor.slice(1));
	return cursor.startsWith("s") ? { seq: n } : { id: n };
}

/**
 * One page of a tenant's records, newest first: the chained records by descending seq, then those
 * written before the chain existed by descending id. Never another tenant's.
 */
export async function listAudit(d1: D1Database, tenantId: string, options: AuditListOptions): Promise<AuditPage> {
	const db = database(d1);
	const cursor = parseCursor(options.cursor);
	const filters: Array<SQL | undefined> = [
		eq(auditLog.tenantId, tenantId),
		options.action !== undefined ? eq(auditLog.action, options.action) : undefined,
		options.actor !== undefined ? eq(auditLog.actor, options.actor) : undefined,
		options.since !== undefined ? gte(auditLog.createdAt, options.since) : undefined,
		options.until !== undefined ? lt(auditLog.createdAt, options.until) : undefined,
	];
	const wanted = options.limit + 1; // one more than a page tells whether there is a next one
	const rows =
		cursor && "id" in cursor
			? []
			: await db
					.select(listColumns)
					.from(auditLog)
					.where(and(...filters, isNotNull(auditLog.seq), cursor ? lt(auditLog.seq, cursor.seq) : undefined))
					.orderBy(desc(auditLog.seq))
					.limit(wanted)
					.all();
	if (rows.length < wanted) {
		const legacy = await db
			.select(listColumns)
			.from(auditLog)
			.where(and(...filters, isNull(auditLog.seq), cursor && "id" in cursor ? lt(auditLog.id, cursor.id) : undefined))
			.orderBy(desc(auditLog.id))
			.limit(wanted - rows.length)
			.all();
		rows.push(...legacy);
	}
	const page = rows.slice(0, options.limit);
	const last = page.at(-1);
	const nextCursor = rows.length > options.limit && last ? (last.seq !== null ? `s${last.seq}` : `l${last.id}`) : null;
	return { records: page.map((r) => ({ ...r, metadata: parseMetadata(r.metadata) })), nextCursor };
}

/** Records read per query while walking a chain. */
const VERIFY_PAGE = 500;

const VERIFY_COLUMNS =
	"tenant_id, seq, prev_hash, hash, actor, action, target, request_id, metadata, created_at, event_id";

export interface AuditVerification extends ChainReport {
	/** Records written before the chain existed: listed, not verifiable. */
	unchained: number;
}

/**
 * Walks the tenant's chain in seq order, recomputing every hash, and reports the first broken link.
 * Reads the columns raw, so a value tampered into another type is seen as it is.
 */
export async function verifyAudit(d1: D1Database, tenantId: string): Promise<AuditVerification> {
	const verifier = new ChainVerifier();
	let after: unknown;
	for (;;) {
		const page =
			after === undefined
				? d1
						.prepare(
							`SELECT ${VERIFY_COLUMNS} FROM audit_log WHERE tenant_id = ?1 AND seq IS NOT NULL ORDER BY seq LIMIT ?2`,
						)
						.bind(tenantId, VERIFY_PAGE)
				: d1
						.prepare(`SELECT ${VERIFY_COLUMNS} FROM audit_log WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3`)
						.bind(tenantId, after, VERIFY_PAGE);
		const { results } = await page.all<StoredRecord>();
		let intact = true;
		for (const record of results) {
			intact = await verifier.add(record);
			if (!intact) break;
		}
		if (!intact || results.length < VERIFY_PAGE) break;
		after = results.at(-1)?.seq;
	}
	const unchained = await d1
		.prepare("SELECT count(*) AS n FROM audit_log WHERE tenant_id = ?1 AND seq IS NULL")
		.bind(tenantId)
		.first<number>("n");
	return { ...verifier.report(), unchained: unchained ?? 0 };
}
