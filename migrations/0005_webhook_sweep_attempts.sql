DROP INDEX `webhook_deliveries_sweep_idx`;--> statement-breakpoint
ALTER TABLE `webhook_deliveries` ADD `enqueue_failures` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `webhook_deliveries` ADD `next_enqueue_at` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX `webhook_deliveries_due_idx` ON `webhook_deliveries` (`next_enqueue_at`) WHERE "webhook_deliveries"."status" = 'received' and "webhook_deliveries"."enqueued_at" is null;