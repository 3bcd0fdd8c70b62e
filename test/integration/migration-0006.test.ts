/**
 * Migration 0006 rebuilds processed_events and event_failures WITHOUT ROWID: it copies only what the
 * retention sweep would keep (the last 30 days, and every row of an event with a dead letter), so a big
 * table never pruned before does not block the deploy. Run here on the pre-0006 tables, on the real local D1.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

const DAY = 86_400_000;

describe("migration 0006_retention_rows", () => {
	it("copies the records of the last 30 days and those of dead-lettered events only", async () => {
		const migration = env.TEST_MIGRATIONS.find((m) => m.name.startsWith("0006_"));
		const rebuild = (migration?.queries ?? []).filter((q) => /processed_events|event_failures/.test(q));
		expect(rebuild.length).toBeGreaterThan(0);
		// The tables as 0002 made them (storage is per test file, so this file alone sees them).
		await env.DB.batch([
			env.DB.prepare("DROP TABLE processed_events"),
			env.DB.prepare("DROP TABLE event_failures"),
			env.DB.prepare(
				"CREATE TABLE processed_events (event_id text NOT NULL, handler text NOT NULL, created_at integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL, PRIMARY KEY(event_id, handler))",
			),
			env.DB.prepare(
				"CREATE TABLE event_failures (event_id text NOT NULL, handler text NOT NULL, attempts integer NOT NULL, last_error text NOT NULL, updated_at integer NOT NULL, PRIMARY KEY(event_id, handler))",
			),
		]);
		const now = Date.now();
		const ages = { recent: 29, old: 31, dead: 90 };
		for (const [eventId, days] of Object.entries(ages)) {
			await env.DB.prepare("INSERT INTO processed_events VALUES (?, 'h', ?)")
				.bind(eventId, now - days * DAY)
				.run();
			await env.DB.prepare("INSERT INTO event_failures VALUES (?, 'h', 1, 'e', ?)")
				.bind(eventId, now - days * DAY)
				.run();
		}
		await env.DB.prepare(
			"INSERT INTO dead_letters (id, event_id, tenant_id, type, event, attempts) VALUES ('dl_m', 'dead', 't', 'x', '{}', 9)",
		).run();

		for (const q of rebuild) await env.DB.prepare(q).run();

		const ids = async (table: string) =>
			(await env.DB.prepare(`SELECT event_id FROM ${table} ORDER BY event_id`).all<{ event_id: string }>()).results.map(
				(r) => r.event_id,
			);
		expect(await ids("processed_events")).toEqual(["dead", "recent"]);
		expect(await ids("event_failures")).toEqual(["dead", "recent"]);
		const ddl = await env.DB.prepare("SELECT sql FROM sqlite_master WHERE name = 'processed_events'").first<{
			sql: string;
		}>();
		expect(ddl?.sql).toMatch(/WITHOUT ROWID$/);
	});
});
