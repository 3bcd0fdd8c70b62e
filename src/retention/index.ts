/** Retention: the sweep every few minutes that keeps tables bounded (settings in src/config: RetentionSchema). */
export {
	isRetentionRun,
	RETENTION_BATCH_ROWS,
	RETENTION_EVERY_MINUTES,
	RETENTION_TABLE_BUDGET_MS,
	type RetentionOptions,
	type RetentionReport,
	sweepRetention,
} from "./sweep";
