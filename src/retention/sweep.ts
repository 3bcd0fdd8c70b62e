/** The retention sweep: deletes rows (and webhook payloads in R2) older than each table's retention, in bounded batches. */
import { and, inArray, lt, sql } from "drizzle-orm";
import type { Retention } from "../config";
import {
	type Database,
	database,
	deadLetters,
	eventFailures,
	llmUsage,
	processedEvents,
	webhookDeliveries,
} from "../db";
import { log } from "../http";

const DAY_MS = 86_400_000;
/** Rows one statement deletes at most (R2 deletes at most 1000 keys per call). */
export const RETENTION_BATCH_ROWS = 1000;
/** Statements per table per run at most: one run deletes ≤ 10,000 rows per table and stays far inside a Worker's limits. */
export const RETENTION_MAX_BATCHES = 10;
/** The sweep runs once an hour, from the cron invocation in this minute of the hour (UTC). */
export const RETENTION_MINUTE = 0;

/** Rows deleted by one run, per table (and R2 payloads deleted with their deliveries). */
export interface RetentionReport {
	processedEvents: number;
	eventFailures: number;
	webhookDeliveries: number;
	webhookPayloads: number;
	llmUsage: number;
}

/** Whether the cron invocation scheduled at `scheduledTime` is the hour's retention run. */
export function isRetentionRun(scheduledTime: number): boolean {
	return new Date(scheduledTime).getUTCMinutes() === RETENTION_MINUTE;
}

/** Runs `batch` until it deletes fewer than a full batch, or {@link RETENTION_MAX_BATCHES} times; the rows deleted. */
async function drain(limits: Limits, batch: () => Promise<number>): Promise<number> {
	let total = 0;
	for (let i = 0; i < limits.maxBatches; i++) {
		const deleted = await batch();
		total += deleted;
		if (deleted < limits.batchRows) break;
	}
	return total;
}

interface Limits {
	batchRows: number;
	maxBatches: number;
}

/** When the sweep runs and how much it may do; the defaults are the constants above (tests make them small). */
export interface RetentionOptions extends Partial<Limits> {
	now?: number;
}

async function changes(db: Database, query: ReturnType<typeof sql>): Promise<number> {
	return (await db.run(query)).meta.changes ?? 0;
}

/** Events whose dead letter can still be replayed keep their records: a replay must skip what already ran. */
const replayable = sql`(SELECT ${deadLetters.eventId} FROM ${deadLetters} WHERE ${deadLetters.status} = 'dead')`;

/**
 * Deletes what is past retention at `now`: `processed_events` and `event_failures` rows (except those of
 * events with a replayable dead letter), processed and forwarded webhook deliveries with their R2
 * payloads (the objects first, so none is orphaned), and `llm_usage` rows of whole UTC days. Never the
 * audit log. Bounded: at most `maxBatches` × `batchRows` rows per table (by default
 * {@link RETENTION_MAX_BATCHES} × {@link RETENTION_BATCH_ROWS}).
 */
export async function sweepRetention(
	env: Pick<Env, "DB" | "FILES">,
	retention: Retention,
	options: RetentionOptions = {},
): Promise<RetentionReport> {
	const db = database(env.DB);
	const now = options.now ?? Date.now();
	const limits = {
		batchRows: options.batchRows ?? RETENTION_BATCH_ROWS,
		maxBatches: options.maxBatches ?? RETENTION_MAX_BATCHES,
	};
	const { batchRows } = limits;
	const cutoff = (days: number) => now - days * DAY_MS;

	const processed = await drain(limits, () =>
		changes(
			db,
			sql`DELETE FROM ${processedEvents} WHERE (${processedEvents.eventId}, ${processedEvents.handler}) IN (
				SELECT ${processedEvents.eventId}, ${processedEvents.handler} FROM ${processedEvents}
				WHERE ${processedEvents.processedAt} < ${cutoff(retention.processedEvents)}
				AND ${processedEvents.eventId} NOT IN ${replayable} LIMIT ${batchRows})`,
		),
	);
	const failures = await drain(limits, () =>
		changes(
			db,
			sql`DELETE FROM ${eventFailures} WHERE (${eventFailures.eventId}, ${eventFailures.handler}) IN (
				SELECT ${eventFailures.eventId}, ${eventFailures.handler} FROM ${eventFailures}
				WHERE ${eventFailures.updatedAt} < ${cutoff(retention.eventFailures)}
				AND ${eventFailures.eventId} NOT IN ${replayable} LIMIT ${batchRows})`,
		),
	);

	let payloads = 0;
	const deliveries = await drain(limits, async () => {
		const old = await db
			.select({ id: webhookDeliveries.id, payloadKey: webhookDeliveries.payloadKey })
			.from(webhookDeliveries)
			.where(
				and(
					inArray(webhookDeliveries.status, ["processed", "forwarded"]),
					lt(webhookDeliveries.receivedAt, cutoff(retention.webhookDeliveries)),
				),
			)
			.limit(batchRows)
			.all();
		const keys = old.flatMap((d) => (d.payloadKey ? [d.payloadKey] : []));
		if (keys.length > 0) await env.FILES.delete(keys);
		payloads += keys.length;
		if (old.length === 0) return 0;
		// The ids travel as one JSON parameter: D1 binds at most 100 per statement.
		return changes(
			db,
			sql`DELETE FROM ${webhookDeliveries} WHERE ${webhookDeliveries.id} IN (SELECT value FROM json_each(${JSON.stringify(old.map((d) => d.id))}))`,
		);
	});

	// Whole UTC days, so the usage report never shows a day in part.
	const firstKeptDay = new Date(cutoff(retention.llmUsage)).toISOString().slice(0, 10);
	const usage = await drain(limits, () =>
		changes(
			db,
			sql`DELETE FROM ${llmUsage} WHERE ${llmUsage.id} IN (
				SELECT ${llmUsage.id} FROM ${llmUsage} WHERE ${llmUsage.day} < ${firstKeptDay} LIMIT ${batchRows})`,
		),
	);

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
