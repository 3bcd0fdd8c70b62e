/**
 * The retention sweep on the real local D1 and R2, with an injected clock: exactly the rows past each
 * table's retention go (webhook payloads in R2 with their rows), the rest stay, and one run is bounded.
 */
import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq, inArray } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { RetentionSchema } from "../../src/config";
import {
	auditLog,
	database,
	deadLetters,
	eventFailures,
	llmUsage,
	processedEvents,
	webhookDeliveries,
	webhookEndpoints,
} from "../../src/db";
import { isRetentionRun, sweepRetention } from "../../src/retention";
import worker from "../../workers/gateway";
import { seedTenant, uniqueId } from "../helpers/identity";

const DAY = 86_400_000;
const NOW = Date.UTC(2027, 5, 15, 12, 0, 0);
const DEFAULTS = RetentionSchema.parse({});
const db = () => database(env.DB);

async function seedEndpoint(tenantId: string): Promise<string> {
	const id = `we_${crypto.randomUUID().replace(/-/g, "").slice(0, 16)}`;
	await db()
		.insert(webhookEndpoints)
		.values({ id, tenantId, name: "retention", source: "github", secrets: "sealed" })
		.run();
	return id;
}

async function seedDelivery(
	tenantId: string,
	endpointId: string,
	d: { status: "received" | "processed" | "forwarded" | "failed"; ageDays: number; inR2?: boolean },
): Promise<{ id: string; payloadKey: string | null }> {
	const id = `wd_${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}`;
	const payloadKey = d.inR2 ? `webhooks/${tenantId}/${endpointId}/${id}` : null;
	if (payloadKey) await env.FILES.put(payloadKey, "x".repeat(100));
	await db()
		.insert(webhookDeliveries)
		.values({
			id,
			tenantId,
			endpointId,
			deliveryId: id,
			status: d.status,
			payload: payloadKey ? null : "eA==",
			payloadKey,
			payloadBytes: 100,
			receivedAt: NOW - d.ageDays * DAY,
		})
		.run();
	return { id, payloadKey };
}

function usageRow(tenantId: string, day: string) {
	return {
		id: `use_${crypto.randomUUID().replace(/-/g, "")}`,
		tenantId,
		actor: "jwt:u",
		operation: "chat",
		requested: "openai/ok",
		promptTokens: 1,
		completionTokens: 1,
		costMicroUsd: 1,
		latencyMs: 1,
		status: 200,
		attempts: 1,
		day,
		createdAt: Date.parse(`${day}T12:00:00Z`),
	};
}

describe("retention sweep", () => {
	it("deletes exactly the rows past each table's retention and keeps the rest", async () => {
		const tenantId = await seedTenant();
		const endpointId = await seedEndpoint(tenantId);
		const old = NOW - (DEFAULTS.processedEvents + 1) * DAY;
		const recent = NOW - (DEFAULTS.processedEvents - 1) * DAY;
		const ev = () => uniqueId("ev");
		const [oldDone, recentDone, oldDead, oldReplayed] = [ev(), ev(), ev(), ev()];
		await db()
			.insert(processedEvents)
			.values([
				{ eventId: oldDone, handler: "h", processedAt: old },
				{ eventId: recentDone, handler: "h", processedAt: recent },
				{ eventId: oldDead, handler: "h", processedAt: old },
				{ eventId: oldReplayed, handler: "h", processedAt: old },
			])
			.run();
		await db()
			.insert(eventFailures)
			.values([
				{ eventId: oldDone, handler: "h", attempts: 1, lastError: "e", updatedAt: old },
				{ eventId: recentDone, handler: "h", attempts: 1, lastError: "e", updatedAt: recent },
				{ eventId: oldDead, handler: "h", attempts: 1, lastError: "e", updatedAt: old },
				{ eventId: oldReplayed, handler: "h", attempts: 1, lastError: "e", updatedAt: old },
			])
			.run();
		// An event with a dead letter keeps its records, replayed or not: the replay (marked `replayed`
		// before it runs, and retried for days) must still skip the handlers that already ran.
		const deadLetter = (eventId: string, status: "dead" | "replayed") => ({
			id: uniqueId("dl"),
			eventId,
			tenantId,
			type: "test.thing",
			event: {},
			attempts: 1,
			status,
		});
		await db()
			.insert(deadLetters)
			.values([deadLetter(oldDead, "dead"), deadLetter(oldReplayed, "replayed")])
			.run();

		const age = DEFAULTS.webhookDeliveries;
		const gone = [
			await seedDelivery(tenantId, endpointId, { status: "processed", ageDays: age + 1, inR2: true }),
			await seedDelivery(tenantId, endpointId, { status: "forwarded", ageDays: age + 1 }),
		];
		const kept = [
			await seedDelivery(tenantId, endpointId, { status: "processed", ageDays: age - 1, inR2: true }),
			// Not delivered yet, or given up: kept whatever their age, for the sweep and for replays.
			await seedDelivery(tenantId, endpointId, { status: "received", ageDays: age + 1, inR2: true }),
			await seedDelivery(tenantId, endpointId, { status: "failed", ageDays: age + 1 }),
		];

		// Usage: whole UTC days before the first kept one go.
		const firstKeptDay = new Date(NOW - DEFAULTS.llmUsage * DAY).toISOString().slice(0, 10);
		const dayBefore = new Date(Date.parse(firstKeptDay) - DAY).toISOString().slice(0, 10);
		await db()
			.insert(llmUsage)
			.values([usageRow(tenantId, dayBefore), usageRow(tenantId, firstKeptDay)])
			.run();

		const report = await sweepRetention(env, DEFAULTS, { now: NOW });

		expect(report).toEqual({
			processedEvents: 1,
			eventFailures: 1,
			webhookDeliveries: 2,
			webhookPayloads: 1,
			llmUsage: 1,
		});
		const left = await db().select({ eventId: processedEvents.eventId }).from(processedEvents).all();
		expect(left.map((r) => r.eventId).sort()).toEqual([oldDead, oldReplayed, recentDone].sort());
		const failures = await db().select({ eventId: eventFailures.eventId }).from(eventFailures).all();
		expect(failures.map((r) => r.eventId).sort()).toEqual([oldDead, oldReplayed, recentDone].sort());
		const deliveries = await db()
			.select({ id: webhookDeliveries.id })
			.from(webhookDeliveries)
			.where(eq(webhookDeliveries.endpointId, endpointId))
			.all();
		expect(deliveries.map((d) => d.id).sort()).toEqual(kept.map((d) => d.id).sort());
		for (const d of gone) if (d.payloadKey) expect(await env.FILES.head(d.payloadKey)).toBeNull();
		for (const d of kept) if (d.payloadKey) expect(await env.FILES.head(d.payloadKey)).not.toBeNull();
		const days = await db().select({ day: llmUsage.day }).from(llmUsage).where(eq(llmUsage.tenantId, tenantId)).all();
		expect(days.map((d) => d.day)).toEqual([firstKeptDay]);

		// A second run at the same time finds nothing more.
		expect(await sweepRetention(env, DEFAULTS, { now: NOW })).toEqual({
			processedEvents: 0,
			eventFailures: 0,
			webhookDeliveries: 0,
			webhookPayloads: 0,
			llmUsage: 0,
		});
	});

	it("deletes batches of a table until its time budget is spent, the rest on the next run", async () => {
		const old = NOW - 100 * DAY;
		const ids = Array.from({ length: 5 }, () => uniqueId("bounded"));
		await db()
			.insert(processedEvents)
			.values(ids.map((eventId) => ({ eventId, handler: "h", processedAt: old })))
			.run();
		const remaining = async () =>
			(await db().select().from(processedEvents).where(inArray(processedEvents.eventId, ids)).all()).length;

		// Each reading of the clock advances it 1 ms: the budget of 2 ms is spent after the second batch.
		let wall = 0;
		const limits = { now: NOW, batchRows: 2, budgetMs: 2, clock: () => ++wall };
		const first = await sweepRetention(env, DEFAULTS, limits);
		expect(first.processedEvents).toBe(4);
		expect(await remaining()).toBe(1);
		const second = await sweepRetention(env, DEFAULTS, limits);
		expect(second.processedEvents).toBe(1);
		expect(await remaining()).toBe(0);
	});

	it("honours per-table settings from the RETENTION var", async () => {
		const retention = RetentionSchema.parse({ processedEvents: 200 });
		const eventId = uniqueId("long");
		await db()
			.insert(processedEvents)
			.values({ eventId, handler: "h", processedAt: NOW - 100 * DAY })
			.run();
		await sweepRetention(env, retention, { now: NOW });
		expect(await db().select().from(processedEvents).where(eq(processedEvents.eventId, eventId)).all()).toHaveLength(1);
		expect(() => RetentionSchema.parse({ auditLog: 1 })).toThrow();
	});

	it("runs from the cron invocations every 5 minutes only, and never touches the audit log", async () => {
		expect(isRetentionRun(Date.UTC(2027, 0, 1, 3, 0, 30))).toBe(true);
		expect(isRetentionRun(Date.UTC(2027, 0, 1, 3, 55, 0))).toBe(true);
		expect(isRetentionRun(Date.UTC(2027, 0, 1, 3, 4, 0))).toBe(false);
		expect(isRetentionRun(Date.UTC(2027, 0, 1, 3, 1, 0))).toBe(false);
		const eventId = uniqueId("cron");
		// Retention counts from the real clock here: a year ago is past every default.
		await db()
			.insert(processedEvents)
			.values({ eventId, handler: "h", processedAt: Date.now() - 365 * DAY })
			.run();
		const auditRows = (await db().select().from(auditLog).all()).length;
		const run = async (minute: number) => {
			const at = new Date();
			at.setUTCMinutes(minute, 0, 0);
			await worker.scheduled(createScheduledController({ scheduledTime: at, cron: "* * * * *" }), env);
		};
		const stored = async () =>
			(await db().select().from(processedEvents).where(eq(processedEvents.eventId, eventId)).all()).length;
		await run(1);
		expect(await stored()).toBe(1);
		await run(0);
		expect(await stored()).toBe(0);
		expect((await db().select().from(auditLog).all()).length).toBe(auditRows);
	});

	it("walks a table in key order over many batches, so a run deletes every old row among recent ones", async () => {
		const ids = Array.from({ length: 7 }, (_, i) => `walk_${i}`);
		await db()
			.insert(processedEvents)
			.values(ids.map((eventId, i) => ({ eventId, handler: "h", processedAt: i % 2 ? NOW : NOW - 100 * DAY })))
			.run();
		const report = await sweepRetention(env, DEFAULTS, { now: NOW, batchRows: 1 });
		// (Another test's old row may go too.)
		expect(report.processedEvents).toBeGreaterThanOrEqual(4);
		const left = await db().select().from(processedEvents).where(inArray(processedEvents.eventId, ids)).all();
		expect(left.map((r) => r.eventId).sort()).toEqual(["walk_1", "walk_3", "walk_5"]);
	});

	it("keeps a delivery replayed while its batch is swept, and leaves no row without its payload", async () => {
		const tenantId = await seedTenant();
		const endpointId = await seedEndpoint(tenantId);
		const d = await seedDelivery(tenantId, endpointId, {
			status: "processed",
			ageDays: DEFAULTS.webhookDeliveries + 1,
			inR2: true,
		});
		// The replay lands while the sweep deletes payloads: it puts the delivery back to `received`.
		let replayed = 0;
		const files = {
			delete: async (keys: string | string[]) => {
				const result = await env.DB.prepare("UPDATE webhook_deliveries SET status = 'received' WHERE id = ?")
					.bind(d.id)
					.run();
				replayed += result.meta.changes ?? 0;
				return env.FILES.delete(keys);
			},
		} as unknown as R2Bucket;
		await sweepRetention({ DB: env.DB, FILES: files }, DEFAULTS, { now: NOW });
		const row = await db().select().from(webhookDeliveries).where(eq(webhookDeliveries.id, d.id)).get();
		// Either the replay found the row (which then stays, with its payload) or it found none.
		if (replayed > 0) {
			expect(row?.status).toBe("received");
			expect(await env.FILES.head(d.payloadKey ?? "")).not.toBeNull();
		} else expect(row).toBeUndefined();
	});

	it("runs the retention sweep to its end when the webhook sweep beside it fails, then fails the run", async () => {
		const tenantId = await seedTenant();
		// Counted from the real clock: two years ago is past every default.
		const day = new Date(Date.now() - 800 * DAY).toISOString().slice(0, 10);
		const usage = usageRow(tenantId, day);
		await db().insert(llmUsage).values(usage).run();
		// The webhook sweep's query (and only it) fails.
		const DB = new Proxy(env.DB, {
			get(target, p) {
				if (p === "prepare")
					return (query: string) => {
						if (query.includes("row_number()")) throw new Error("webhook sweep down");
						return target.prepare(query);
					};
				const value = Reflect.get(target, p);
				return typeof value === "function" ? value.bind(target) : value;
			},
		});
		const at = new Date();
		at.setUTCMinutes(0, 0, 0);
		await expect(
			worker.scheduled(createScheduledController({ scheduledTime: at, cron: "* * * * *" }), { ...env, DB }),
		).rejects.toThrow("webhook sweep down");
		expect(await db().select().from(llmUsage).where(eq(llmUsage.id, usage.id)).all()).toEqual([]);
	});
});
