/** The append-only audit log: every admin mutation and aggregated security event lands here. */
import { and, desc, eq, lt } from "drizzle-orm";
import { type AuditRecord, auditLog, database } from "../db";

export interface AuditEntry {
	tenantId: string;
	actor: string;
	action: string;
	target?: string | null;
	requestId?: string | null;
	/** Facts about the action. Never a secret. */
	metadata?: Record<string, unknown> | null;
}

/** Appends records. The table refuses updates and deletes (see migrations). */
export async function appendAudit(d1: D1Database, entries: AuditEntry | AuditEntry[]): Promise<void> {
	const rows = (Array.isArray(entries) ? entries : [entries]).map((e) => ({
		tenantId: e.tenantId,
		actor: e.actor,
		action: e.action,
		target: e.target ?? null,
		requestId: e.requestId ?? null,
		metadata: e.metadata ?? null,
	}));
	if (rows.length === 0) return;
	await database(d1).insert(auditLog).values(rows).run();
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
