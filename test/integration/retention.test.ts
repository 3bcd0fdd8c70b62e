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
			])
			.run();
		// A dead letter that can still be replayed keeps its event's records; a replayed one does not.
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
			processedEvents: 2,
			eventFailures: 1,
			webhookDeliveries: 2,
			webhookPayloads: 1,
			llmUsage: 1,
		});
		const left = await db().select({ eventId: processedEvents.eventId }).from(processedEvents).all();
		expect(left.map((r) => r.eventId).sort()).toEqual([oldDead, recentDone].sort());
		const failures = await db().select({ eventId: eventFailures.eventId }).from(eventFailures).all();
		expect(failures.map((r) => r.eventId).sort()).toEqual([oldDead, recentDone].sort());
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

	it("deletes at most maxBatches × batchRows rows of a table per run, the rest on the next", async () => {
		const old = NOW - 100 * DAY;
		const ids = Array.from({ length: 5 }, () => uniqueId("bounded"));
		await db()
			.insert(processedEvents)
			.values(ids.map((eventId) => ({ eventId, handler: "h", processedAt: old })))
			.run();
		const remaining = async () =>
			(await db().select().from(processedEvents).where(inArray(processedEvents.eventId, ids)).all()).length;

		const first = await sweepRetention(env, DEFAULTS, { now: NOW, batchRows: 2, maxBatches: 2 });
		expect(first.processedEvents).toBe(4);
		expect(await remaining()).toBe(1);
		const second = await sweepRetention(env, DEFAULTS, { now: NOW, batchRows: 2, maxBatches: 2 });
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

	it("runs from the cron invocation at the hour's retention minute only, and never touches the audit log", async () => {
		expect(isRetentionRun(Date.UTC(2027, 0, 1, 3, 0, 30))).toBe(true);
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
});
