CREATE TABLE `breakers` (
	`name` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`target` text NOT NULL,
	`state` text NOT NULL,
	`seq` integer NOT NULL,
	`reason` text,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `breakers_tenant_idx` ON `breakers` (`tenant_id`);--> statement-breakpoint
CREATE TABLE `llm_usage` (
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
);
--> statement-breakpoint
CREATE INDEX `llm_usage_tenant_day_idx` ON `llm_usage` (`tenant_id`,`day`,`model`);--> statement-breakpoint
CREATE TABLE `provider_keys` (
	`tenant_id` text NOT NULL,
	`provider` text NOT NULL,
	`sealed_key` text NOT NULL,
	`hint` text NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	`updated_at` integer,
	PRIMARY KEY(`tenant_id`, `provider`),
	FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON UPDATE no action ON DELETE no action
);
