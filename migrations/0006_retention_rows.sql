-- Rows written are what D1 bills, and every index entry is a row.
-- audit_log: no query uses (tenant_id, id); every read goes through (tenant_id, seq).
DROP INDEX `audit_log_tenant_idx`;--> statement-breakpoint
-- Small rows keyed by text: WITHOUT ROWID stores each in its primary key's b-tree, so an insert writes one
-- row instead of a row and an index entry (llm_usage: two instead of three). drizzle cannot say WITHOUT ROWID,
-- so the tables are rebuilt here; their columns and keys are unchanged (schema.ts and the snapshot agree).
CREATE TABLE `__new_processed_events` (
	`event_id` text NOT NULL,
	`handler` text NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	PRIMARY KEY(`event_id`, `handler`)
) WITHOUT ROWID;--> statement-breakpoint
-- Only what the retention sweep would keep is copied (processed_events was never pruned before, so copying it all
-- could exceed D1's limits and block the deploy): rows newer than the default 30 days (ms, as created_at's
-- default) and every row of an event with a dead letter. A longer RETENTION setting starts from 30 days here.
INSERT INTO `__new_processed_events` (`event_id`, `handler`, `created_at`)
	SELECT `event_id`, `handler`, `created_at` FROM `processed_events`
	WHERE `created_at` >= cast(unixepoch('subsec') * 1000 as integer) - 30 * 86400000
		OR `event_id` IN (SELECT `event_id` FROM `dead_letters`);--> statement-breakpoint
DROP TABLE `processed_events`;--> statement-breakpoint
ALTER TABLE `__new_processed_events` RENAME TO `processed_events`;--> statement-breakpoint
CREATE TABLE `__new_event_failures` (
	`event_id` text NOT NULL,
	`handler` text NOT NULL,
	`attempts` integer NOT NULL,
	`last_error` text NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`event_id`, `handler`)
) WITHOUT ROWID;--> statement-breakpoint
INSERT INTO `__new_event_failures` (`event_id`, `handler`, `attempts`, `last_error`, `updated_at`)
	SELECT `event_id`, `handler`, `attempts`, `last_error`, `updated_at` FROM `event_failures`
	-- The same rows the sweep would keep, as above.
	WHERE `updated_at` >= cast(unixepoch('subsec') * 1000 as integer) - 30 * 86400000
		OR `event_id` IN (SELECT `event_id` FROM `dead_letters`);--> statement-breakpoint
DROP TABLE `event_failures`;--> statement-breakpoint
ALTER TABLE `__new_event_failures` RENAME TO `event_failures`;--> statement-breakpoint
CREATE TABLE `__new_llm_usage` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`actor` text NOT NULL,
	`key_id` text,
	`request_id` text,
	`operation` text NOT NULL,
	`requested` text NOT NULL,
	`provider` text,
	`model` text,
	`prompt_tokens` integer NOT NULL,
	`completion_tokens` integer NOT NULL,
	`estimated` integer DEFAULT 0 NOT NULL,
	`cost_micro_usd` integer NOT NULL,
	`latency_ms` integer NOT NULL,
	`status` integer NOT NULL,
	`cache_hit` integer DEFAULT 0 NOT NULL,
	`byok` integer DEFAULT 0 NOT NULL,
	`attempts` integer NOT NULL,
	`day` text NOT NULL,
	`created_at` integer NOT NULL
) WITHOUT ROWID;--> statement-breakpoint
INSERT INTO `__new_llm_usage` SELECT `id`, `tenant_id`, `actor`, `key_id`, `request_id`, `operation`, `requested`,
	`provider`, `model`, `prompt_tokens`, `completion_tokens`, `estimated`, `cost_micro_usd`, `latency_ms`, `status`,
	`cache_hit`, `byok`, `attempts`, `day`, `created_at` FROM `llm_usage`;--> statement-breakpoint
DROP TABLE `llm_usage`;--> statement-breakpoint
ALTER TABLE `__new_llm_usage` RENAME TO `llm_usage`;--> statement-breakpoint
CREATE INDEX `llm_usage_tenant_day_idx` ON `llm_usage` (`tenant_id`,`day`,`model`);
