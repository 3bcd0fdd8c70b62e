/** Retention: the hourly sweep that keeps tables bounded (settings in src/config: RetentionSchema). */
export {
	isRetentionRun,
	RETENTION_BATCH_ROWS,
	RETENTION_MAX_BATCHES,
	RETENTION_MINUTE,
	type RetentionOptions,
	type RetentionReport,
	sweepRetention,
} from "./sweep";
