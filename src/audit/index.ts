/** The append-only audit log: every admin mutation and aggregated security event lands here. */
import { and, desc, eq, lt } from "drizzle-orm";
import { type AuditRecord, auditLog, type Database, database } from "../db";

export interface AuditEntry {
	tenantId: string;
	actor: string;
	action: string;
	target?: string | null;
	requestId?: string | null;
	/** Facts about the action. Never a secret. */
	metadata?: Record<string, unknown> | null;
}

/** D1 refuses a statement that binds more parameters than this. */
const D1_MAX_BOUND_PARAMETERS = 100;

function auditRow(e: AuditEntry) {
	return {
		tenantId: e.tenantId,
		actor: e.actor,
		action: e.action,
		target: e.target ?? null,
		requestId: e.requestId ?? null,
		metadata: e.metadata ?? null,
	};
}

/** Every row binds one parameter per field it sets (the id and timestamp come from the database). */
const AUDIT_ROWS_PER_STATEMENT = Math.floor(
	D1_MAX_BOUND_PARAMETERS / Object.keys(auditRow({ tenantId: "", actor: "", action: "" })).length,
);

/**
 * The insert of one record, not yet executed: put it in the same `db.batch([...])` as the mutation
 * it records, so D1 commits both or neither.
 */
export function auditInsert(db: Database, entry: AuditEntry) {
	return db.insert(auditLog).values(auditRow(entry));
}

/**
 * Appends records, any number at once, atomically: they are split into statements that stay under
 * D1's bound-parameter limit and written in one batch. The table refuses updates and deletes (see migrations).
 */
export async function appendAudit(d1: D1Database, entries: AuditEntry | AuditEntry[]): Promise<void> {
	const rows = (Array.isArray(entries) ? entries : [entries]).map(auditRow);
	if (rows.length === 0) return;
	const db = database(d1);
	const inserts = [];
	for (let i = 0; i < rows.length; i += AUDIT_ROWS_PER_STATEMENT) {
		inserts.push(db.insert(auditLog).values(rows.slice(i, i + AUDIT_ROWS_PER_STATEMENT)));
	}
	const [first, ...rest] = inserts;
	if (first) await db.batch([first, ...rest]);
}

/** A tenant's records, newest first, `limit` at a time before the `before` id. */
export async function listAudit(
	d1: D1Database,
	tenantId: string,
	options: { limit: number; before?: number },
): Promise<AuditRecord[]> {
	const where = options.before
		? and(eq(auditLog.tenantId, tenantId), lt(auditLog.id, options.before))
		: eq(auditLog.tenantId, tenantId);
	return database(d1).select().from(auditLog).where(where).orderBy(desc(auditLog.id)).limit(options.limit).all();
}
