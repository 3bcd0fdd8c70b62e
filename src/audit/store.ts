/**
 * Writing the audit log: every record is appended to its tenant's hash chain, in the same D1 batch as
 * the mutation it records. The chain's order is decided by UNIQUE(tenant_id, seq): a writer that lost
 * the race to another one re-reads the tenant's last record and tries again.
 */
import { and, desc, eq, isNotNull } from "drizzle-orm";
import type { BatchItem, BatchResponse } from "drizzle-orm/batch";
import { auditLog, type Database, database } from "../db";
import { perIsolate, sleep, TIMED_OUT, within } from "../lib";
import { chainHash, GENESIS_HASH, normalizeJson } from "./chain";

export interface AuditEntry {
	tenantId: string;
	actor: string;
	action: string;
	target?: string | null;
	requestId?: string | null;
	/** Facts about the action. Never a secret. */
	metadata?: Record<string, unknown> | null;
	/** When it happened (ms since the epoch); the time of the write when absent. Covered by the hash. */
	createdAt?: number;
}

/** A record ready to be chained: every hashed field fixed, so a retry writes the same content. */
export interface PendingRecord {
	tenantId: string;
	actor: string;
	action: string;
	target: string | null;
	requestId: string | null;
	metadata: Record<string, unknown> | null;
	createdAt: number;
	eventId: string | null;
}

interface Head {
	seq: number;
	hash: string;
}

/** D1 refuses a statement that binds more parameters than this. */
const D1_MAX_BOUND_PARAMETERS = 100;
/** Attempts of a write that keeps losing the seq race to writers in other isolates. */
const MAX_ATTEMPTS = 8;
/** Random delay before retry n: up to min(cap, base · 2^n) ms, so racing writers spread out. */
const RETRY_JITTER_BASE_MS = 4;
const RETRY_JITTER_CAP_MS = 100;
/** How long a line of writers in this isolate may stand still before the next writer goes ahead anyway. */
const LOCK_WAIT_MS = 2_000;

/**
 * The messages SQLite gives for the two unique indexes (D1 throws `D1_ERROR: UNIQUE constraint failed:
 * …: SQLITE_CONSTRAINT`; drizzle wraps it as the `cause`).
 */
const SEQ_TAKEN = /\bUNIQUE constraint failed: audit_log\.tenant_id, audit_log\.seq\b/;
const EVENT_WRITTEN = /\bUNIQUE constraint failed: audit_log\.event_id\b/;

function causedBy(err: unknown, pattern: RegExp): boolean {
	for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
		if (pattern.test(e.message)) return true;
	}
	return false;
}

/**
 * Every field as it will read back, so verification recomputes the same hash: text well-formed (a lone
 * surrogate would not survive storage), metadata through JSON, the time in whole milliseconds.
 */
function pending(e: AuditEntry, now: number, eventId: string | null = null): PendingRecord {
	const text = <T extends string | null | undefined>(v: T) => (typeof v === "string" ? v.toWellFormed() : v);
	return {
		tenantId: e.tenantId,
		actor: text(e.actor),
		action: text(e.action),
		target: text(e.target) ?? null,
		requestId: text(e.requestId) ?? null,
		metadata: normalizeJson(e.metadata ?? null),
		createdAt: Math.floor(e.createdAt ?? now),
		eventId,
	};
}

function headQuery(db: Database, tenantId: string) {
	return db
		.select({ seq: auditLog.seq, hash: auditLog.hash })
		.from(auditLog)
		.where(and(eq(auditLog.tenantId, tenantId), isNotNull(auditLog.seq)))
		.orderBy(desc(auditLog.seq))
		.limit(1);
}

function toHead(rows: Array<{ seq: number | null; hash: string | null }>): Head {
	const last = rows[0];
	if (!last || last.seq === null) return { seq: 0, hash: GENESIS_HASH };
	return { seq: last.seq, hash: last.hash ?? GENESIS_HASH };
}

/** The last record of each tenant, read in one round trip. */
async function readHeads(db: Database, tenantIds: string[]): Promise<Map<string, Head>> {
	const [first, ...rest] = tenantIds.map((t) => headQuery(db, t));
	if (!first) return new Map();
	const results = await db.batch([first, ...rest]);
	return new Map(tenantIds.map((t, i) => [t, toHead(results[i] ?? [])]));
}

/** Gives each record the next seq of its tenant after `heads`, its predecessor's hash and its own. */
async function chain(records: PendingRecord[], heads: Map<string, Head>) {
	const next = new Map(heads);
	const rows = [];
	for (const r of records) {
		const head = next.get(r.tenantId) ?? { seq: 0, hash: GENESIS_HASH };
		const seq = head.seq + 1;
		const hash = await chainHash({ ...r, seq, prevHash: head.hash });
		rows.push({ ...r, seq, prevHash: head.hash, hash });
		next.set(r.tenantId, { seq, hash });
	}
	return rows;
}

type ChainedRow = Awaited<ReturnType<typeof chain>>[number];

/** Rows per insert statement: every row binds one parameter per column it sets. */
const ROWS_PER_STATEMENT = Math.floor(
	D1_MAX_BOUND_PARAMETERS /
		Object.keys({
			...pending({ tenantId: "", actor: "", action: "" }, 0),
			seq: 0,
			prevHash: "",
			hash: "",
		} satisfies ChainedRow).length,
);

function inserts(db: Database, rows: ChainedRow[]) {
	const statements = [];
	for (let i = 0; i < rows.length; i += ROWS_PER_STATEMENT) {
		statements.push(db.insert(auditLog).values(rows.slice(i, i + ROWS_PER_STATEMENT)));
	}
	return statements;
}

/** Runs `attempt` again, after a random delay, each time it loses the seq race; any other error propagates. */
async function retryOnSeqConflict<T>(attempt: () => Promise<T>): Promise<T> {
	for (let n = 1; ; n++) {
		try {
			return await attempt();
		} catch (err) {
			if (n >= MAX_ATTEMPTS || !causedBy(err, SEQ_TAKEN)) throw err;
			await sleep(Math.random() * Math.min(RETRY_JITTER_CAP_MS, RETRY_JITTER_BASE_MS * 2 ** n));
		}
	}
}

/** A tenant's line of writers in this isolate. */
interface Queue {
	/** Resolved by the last writer in line when it is done. */
	tail: Promise<void>;
	/** When a writer in line last started or finished (ms). */
	movedAt: number;
}

/** Per D1 binding, per tenant with writers in flight. */
const queues = perIsolate((_d1: D1Database) => new Map<string, Queue>());

/**
 * Lines the isolate's writers of the same tenants up, so concurrent requests in one isolate do not race
 * each other for the same seq. Only an optimisation: correctness rests on the unique index. A writer
 * ahead that never finishes (its request cancelled mid-write) stops the line for LOCK_WAIT_MS at most:
 * a waiter goes ahead once its line has not moved for that long.
 */
async function inTenantQueues<T>(d1: D1Database, tenantIds: string[], fn: () => Promise<T>): Promise<T> {
	const lines = queues(d1);
	let release = () => {};
	const mine = new Promise<void>((resolve) => {
		release = resolve;
	});
	// Joins every line at once, synchronously: a writer only ever waits for earlier ones, so no cycle.
	const ahead: Promise<void>[] = [];
	const joined: Queue[] = [];
	for (const t of tenantIds) {
		const line = lines.get(t);
		if (line) {
			ahead.push(line.tail);
			line.tail = mine;
			joined.push(line);
		} else {
			const fresh = { tail: mine, movedAt: Date.now() };
			lines.set(t, fresh);
			joined.push(fresh);
		}
	}
	const moved = () => {
		const now = Date.now();
		for (const line of joined) line.movedAt = now;
	};
	if (ahead.length > 0) {
		const done = Promise.all(ahead).then(() => true);
		for (;;) {
			const finished = (await within(done, LOCK_WAIT_MS)) !== TIMED_OUT;
			if (finished || joined.every((line) => Date.now() - line.movedAt >= LOCK_WAIT_MS)) break;
		}
	}
	moved();
	try {
		return await fn();
	} finally {
		moved();
		release();
		for (const t of tenantIds) if (lines.get(t)?.tail === mine) lines.delete(t);
	}
}

type Statement = BatchItem<"sqlite">;

/**
 * Commits `statements` (built afresh by the callback on each attempt) and the audit records of what
 * they do in one D1 batch: both or neither. On a lost seq race the whole batch has rolled back and is
 * run again, so the statements must give the same outcome when repeated after a rollback. Resolves
 * to the statements' results.
 */
export async function commitWithAudit<T extends Statement[]>(
	d1: D1Database,
	entries: AuditEntry | AuditEntry[],
	statements: (db: Database) => [...T],
): Promise<BatchResponse<T>> {
	const now = Date.now();
	const records = (Array.isArray(entries) ? entries : [entries]).map((e) => pending(e, now));
	const tenantIds = [...new Set(records.map((r) => r.tenantId))];
	const db = database(d1);
	return inTenantQueues(d1, tenantIds, () =>
		retryOnSeqConflict(async () => {
			const own = statements(db);
			const all: Statement[] = [...own, ...inserts(db, await chain(records, await readHeads(db, tenantIds)))];
			if (all.length === 0) return [] as unknown as BatchResponse<T>;
			const results = await db.batch(all as [Statement, ...Statement[]]);
			return results.slice(0, own.length) as unknown as BatchResponse<T>;
		}),
	);
}

/**
 * Appends records, any number at once and for any tenants, atomically: chained, split into statements
 * under D1's bound-parameter limit, and written in one batch. The table refuses updates and deletes
 * (see migrations).
 */
export async function appendAudit(d1: D1Database, entries: AuditEntry | AuditEntry[]): Promise<void> {
	if (Array.isArray(entries) && entries.length === 0) return;
	await commitWithAudit(d1, entries, () => []);
}

/**
 * Appends the record of an event once: a second arrival of the same event id writes nothing, also when
 * both arrive at once. Resolves to whether this call wrote it.
 */
export async function appendAuditOnce(d1: D1Database, entry: AuditEntry, eventId: string): Promise<boolean> {
	const record = pending(entry, Date.now(), eventId);
	const db = database(d1);
	return inTenantQueues(d1, [record.tenantId], () =>
		retryOnSeqConflict(async () => {
			const [seen, head] = await db.batch([
				db.select({ id: auditLog.id }).from(auditLog).where(eq(auditLog.eventId, eventId)).limit(1),
				headQuery(db, record.tenantId),
			]);
			if (seen.length > 0) return false;
			const rows = await chain([record], new Map([[record.tenantId, toHead(head)]]));
			try {
				await db.insert(auditLog).values(rows).run();
				return true;
			} catch (err) {
				if (causedBy(err, EVENT_WRITTEN)) return false;
				throw err;
			}
		}),
	);
}
