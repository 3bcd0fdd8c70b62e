/**
 * The retention sweep: deletes rows (and webhook payloads in R2) older than each table's retention, in batches.
 *
 * Capacity. Every {@link RETENTION_EVERY_MINUTES} minutes (288 runs a day) each table gets up to
 * {@link RETENTION_TABLE_BUDGET_MS} of wall time (4 tables: ≤ 20 s a run), deleting batches of
 * {@link RETENTION_BATCH_ROWS} rows until a batch comes back short or its budget is spent; at 5 batches a
 * second (an estimate, not measured on D1) that is 25,000 rows per table per run, 7.2 million a day (ingest at 500 events/s writes 43 million
 * processed_events rows a day: past ~80 events/s sustained, raise the budget or the frequency).
 *
 * No index on the predicates (processed_events.created_at, event_failures.updated_at,
 * webhook_deliveries.received_at, llm_usage.day): each would cost one more row written on every insert,
 * doubling processed_events' (the busiest table). Event ids are random (newEvent, webhook delivery ids),
 * so the key order says nothing about age either. Instead a run walks each table once in its key order:
 * each batch continues after the last key the previous one deleted, so a run reads the table at most
 * once (reads cost a thousandth of writes) rather than once per batch.
 */
import { type Column, type SQL, sql } from "drizzle-orm";
import type { Retention } from "../config";
import { type Database, database, eventFailures, llmUsage, processedEvents, webhookDeliveries } from "../db";
import { log } from "../http";

const DAY_MS = 86_400_000;
/** Rows one statement deletes at most (R2 deletes at most 1000 keys per call). */
export const RETENTION_BATCH_ROWS = 1000;
/** Wall time one run spends on one table at most (four tables: ≤ 20 s, far inside a scheduled Worker's limit). */
export const RETENTION_TABLE_BUDGET_MS = 5000;
/** The sweep runs from the cron invocations whose UTC minute is a multiple of this. */
export const RETENTION_EVERY_MINUTES = 5;

/** Rows deleted by one run, per table (and R2 payloads deleted with their deliveries). */
export interface RetentionReport {
	processedEvents: number;
	eventFailures: number;
	webhookDeliveries: number;
	webhookPayloads: number;
	llmUsage: number;
}

/** Whether the cron invocation scheduled at `scheduledTime` is a retention run. */
export function isRetentionRun(scheduledTime: number): boolean {
	return new Date(scheduledTime).getUTCMinutes() % RETENTION_EVERY_MINUTES === 0;
}

interface Limits {
	batchRows: number;
	budgetMs: number;
	/** Wall time in ms, for the budget. */
	clock: () => number;
}

/** When the sweep runs and how much it may do; the defaults are the constants above (tests make them small). */
export interface RetentionOptions extends Partial<Limits> {
	now?: number;
}

type Row = Record<string, string | number | null>;

/** Whether key `a` sorts after key `b` (ids are ASCII, so JS and SQLite's BINARY order agree). */
function after(a: Row, b: Row, key: readonly string[]): boolean {
	for (const c of key) {
		if (a[c] === b[c]) continue;
		return String(a[c]) > String(b[c]);
	}
	return false;
}

/**
 * Deletes the rows of `table` matching `where` in batches, walking its key `key` in order, until a
 * batch comes back short or the budget is spent; `deleted` sees each batch's rows (`returning` columns)
 * after they are gone. The rows deleted.
 */
async function drain(
	db: Database,
	limits: Limits,
	table: { name: string; key: readonly string[]; where: SQL; returning?: readonly string[] },
	deleted?: (rows: Row[]) => Promise<void>,
): Promise<number> {
	const t = sql.identifier(table.name);
	const list = (cols: readonly string[]) =>
		sql.join(
			cols.map((c) => sql.identifier(c)),
			sql`, `,
		);
	const keys = list(table.key);
	const deadline = limits.clock() + limits.budgetMs;
	let last: Row = Object.fromEntries(table.key.map((c) => [c, ""]));
	let total = 0;
	for (;;) {
		const cursor = sql.join(
			table.key.map((c) => sql`${last[c]}`),
			sql`, `,
		);
		const rows = await db.all<Row>(
			sql`DELETE FROM ${t} WHERE (${keys}) IN (
				SELECT ${keys} FROM ${t} WHERE (${keys}) > (${cursor}) AND ${table.where}
				ORDER BY ${keys} LIMIT ${limits.batchRows})
			RETURNING ${list([...table.key, ...(table.returning ?? [])])}`,
		);
		total += rows.length;
		if (deleted) await deleted(rows);
		if (rows.length < limits.batchRows || limits.clock() >= deadline) return total;
		for (const r of rows) if (after(r, last, table.key)) last = r;
	}
}

/**
 * Every event that has a dead letter keeps its records, whatever the letter's status: a replay (marked
 * `replayed` before the event runs again, possibly retried for days) must still skip what already ran.
 * dead_letters is never pruned; its (event_id) unique index answers this.
 */
function recordsPast(table: string, column: Column, cutoff: number): SQL {
	return sql`${column} < ${cutoff}
		AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE dead_letters.event_id = ${sql.identifier(table)}.event_id)`;
}

/**
 * Deletes what is past retention at `now`: `processed_events` and `event_failures` rows (except those of
 * events with a dead letter), processed and forwarded webhook deliveries with their R2 payloads (the rows
 * first: an orphaned object is harmless, a row without its payload is not), and `llm_usage` rows of
 * whole UTC days. Never the audit log. Each table for at most `budgetMs` (by default
 * {@link RETENTION_TABLE_BUDGET_MS}), in batches of `batchRows` ({@link RETENTION_BATCH_ROWS}).
 */
export async function sweepRetention(
	env: Pick<Env, "DB" | "FILES">,
	retention: Retention,
	options: RetentionOptions = {},
): Promise<RetentionReport> {
	const db = database(env.DB);
	const now = options.now ?? Date.now();
	const limits: Limits = {
		batchRows: options.batchRows ?? RETENTION_BATCH_ROWS,
		budgetMs: options.budgetMs ?? RETENTION_TABLE_BUDGET_MS,
		clock: options.clock ?? Date.now,
	};
	const cutoff = (days: number) => now - days * DAY_MS;
	const records = (name: string, column: Column, days: number) =>
		drain(db, limits, { name, key: ["event_id", "handler"], where: recordsPast(name, column, cutoff(days)) });

	const processed = await records("processed_events", processedEvents.processedAt, retention.processedEvents);
	const failures = await records("event_failures", eventFailures.updatedAt, retention.eventFailures);

	// One statement selects and deletes, so a delivery replayed meanwhile (status back to `received`)
	// stays, and only the payloads of rows actually deleted go.
	let payloads = 0;
	const deliveries = await drain(
		db,
		limits,
		{
			name: "webhook_deliveries",
			key: ["id"],
			where: sql`${webhookDeliveries.status} IN ('processed', 'forwarded') AND ${webhookDeliveries.receivedAt} < ${cutoff(retention.webhookDeliveries)}`,
			returning: ["payload_key"],
		},
		async (rows) => {
			const keys = rows.flatMap((r) => (typeof r.payload_key === "string" ? [r.payload_key] : []));
			if (keys.length > 0) await env.FILES.delete(keys);
			payloads += keys.length;
		},
	);

	// Whole UTC days, so the usage report never shows a day in part.
	const firstKeptDay = new Date(cutoff(retention.llmUsage)).toISOString().slice(0, 10);
	const usage = await drain(db, limits, {
		name: "llm_usage",
		key: ["id"],
		where: sql`${llmUsage.day} < ${firstKeptDay}`,
	});

	const report = {
		processedEvents: processed,
		eventFailures: failures,
		webhookDeliveries: deliveries,
		webhookPayloads: payloads,
		llmUsage: usage,
	};
	if (processed + failures + deliveries + usage > 0) log("info", "retention sweep", { ...report });
	return report;
}
