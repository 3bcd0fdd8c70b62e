/**
 * The events consumer's set-based bookkeeping, on the real local D1: the D1 round trips a queue batch
 * costs do not grow with its size, rows written stay as they were, and a bad event or a failing statement
 * fails only its own message (the batch is taken apart), with effect and record committed together.
 */
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq, inArray, sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { meterD1 } from "../../bench/worker";
import { database, eventFailures, processedEvents, tenants, webhookDeliveries } from "../../src/db";
import { type EventEnvelope, type EventHandler, handleEventBatch, newEvent } from "../../src/events";
import { deliveryStatusUpdater } from "../../src/webhooks";
import worker from "../../workers/gateway";
import { deliveryRow, seedStoredDelivery, tenantWithGithubEndpoint } from "../helpers/webhooks";

/** A D1 binding that counts its round trips: each statement run on its own, and each batch, is one. */
class CountingStatement {
	constructor(
		readonly inner: D1PreparedStatement,
		readonly trip: () => void,
	) {}
	bind(...values: unknown[]): CountingStatement {
		return new CountingStatement(this.inner.bind(...values), this.trip);
	}
	run<T>() {
		this.trip();
		return this.inner.run<T>();
	}
	all<T>() {
		this.trip();
		return this.inner.all<T>();
	}
	raw<T extends unknown[]>(options?: { columnNames?: false }) {
		this.trip();
		return this.inner.raw<T>(options);
	}
	first<T>(column?: string) {
		this.trip();
		return column === undefined ? this.inner.first<T>() : this.inner.first<T>(column);
	}
}

/** `env` with its D1 metered (rows written) and counted (round trips). */
function instrumented() {
	const { db: metered, counter } = meterD1(env.DB);
	let trips = 0;
	const trip = () => {
		trips++;
	};
	const db = {
		prepare: (query: string) => new CountingStatement(metered.prepare(query), trip),
		batch: (statements: D1PreparedStatement[]) => {
			trip();
			return metered.batch(
				statements.map((s) => (s instanceof CountingStatement ? s.inner : s) as D1PreparedStatement),
			);
		},
	} as unknown as D1Database;
	return {
		env: { ...env, DB: db },
		rows: () => counter.written,
		trips: () => trips,
	};
}

let messages = 0;
function batchOf(events: unknown[], attempts = 1) {
	return createMessageBatch(
		"edgeway-events",
		events.map((body) => ({ id: `set-${++messages}`, timestamp: new Date(), attempts, body })),
	);
}

function deliveryEvent(endpoint: { tenantId: string; id: string }, deliveryId: string, forward = false) {
	return newEvent({
		id: `ev_${deliveryId}`,
		type: "webhook.received",
		tenantId: endpoint.tenantId,
		source: `webhooks/${endpoint.id}`,
		data: { deliveryId, endpointId: endpoint.id, forward },
	});
}

/** A stored delivery of a fresh tenant's GitHub endpoint, and its `webhook.received` event. */
async function storedDeliveries(count: number) {
	const { tenantId, endpoint } = await tenantWithGithubEndpoint();
	const owner = { tenantId, id: endpoint.id };
	const ids = await Promise.all(Array.from({ length: count }, () => seedStoredDelivery(owner)));
	return { owner, ids, events: ids.map((id) => deliveryEvent(owner, id)) };
}

const statusOf = async (ids: string[]) =>
	(
		await database(env.DB)
			.select({ status: webhookDeliveries.status })
			.from(webhookDeliveries)
			.where(inArray(webhookDeliveries.id, ids))
			.all()
	).map((r) => r.status);

const handledOf = async (eventIds: string[]) =>
	database(env.DB)
		.select({ eventId: processedEvents.eventId, handler: processedEvents.handler })
		.from(processedEvents)
		.where(inArray(processedEvents.eventId, eventIds))
		.all();

describe("events consumer: set-based bookkeeping", () => {
	it("processes a batch of 40 webhook deliveries in 2 D1 round trips, writing 2 rows per delivery", async () => {
		const { ids, events } = await storedDeliveries(40);
		const first = instrumented();
		const batch = batchOf(events);
		await worker.queue(batch, first.env);
		const result = await getQueueResult(batch, createExecutionContext());

		expect(result.explicitAcks).toHaveLength(40);
		// The processed_events lookup, then one batch: the status updates and the processed_events rows.
		expect(first.trips()).toBe(2);
		// Per delivery: its status update and its processed_events row, as when each message had its own.
		expect(first.rows()).toBe(80);
		expect(new Set(await statusOf(ids))).toEqual(new Set(["processed"]));
		expect(await handledOf(events.map((e) => e.id))).toHaveLength(40);
		expect((await deliveryRow(ids[0] ?? ""))?.enqueuedAt).toEqual(expect.any(Number));

		// Redelivered (at least once): one lookup finds every event done; nothing runs, nothing is written.
		const again = instrumented();
		const redelivery = batchOf(events, 2);
		await worker.queue(redelivery, again.env);
		expect((await getQueueResult(redelivery, createExecutionContext())).explicitAcks).toHaveLength(40);
		expect({ trips: again.trips(), rows: again.rows() }).toEqual({ trips: 1, rows: 0 });
	});

	it("fails only the event the set-based handler cannot build statements for; the rest of the batch is processed", async () => {
		const { ids, events } = await storedDeliveries(3);
		const other = await storedDeliveries(1);
		// Another tenant's event whose data names no delivery: the status updater throws for it.
		const broken = { ...(other.events[0] as EventEnvelope), data: { endpointId: other.owner.id } };
		const batch = batchOf([...events, broken]);

		const outcomes = await handleEventBatch(batch, env, [deliveryStatusUpdater]);
		const result = await getQueueResult(batch, createExecutionContext());

		expect(outcomes.map((o) => o.outcome)).toEqual(["acked", "acked", "acked", "retried"]);
		expect(outcomes[3]).toMatchObject({ eventId: broken.id, failed: ["webhook-delivery-status"], ran: [] });
		expect(result.explicitAcks.sort()).toEqual(
			batch.messages
				.slice(0, 3)
				.map((m) => m.id)
				.sort(),
		);
		expect(result.retryMessages).toEqual([{ msgId: batch.messages[3]?.id }]);
		expect(await statusOf(ids)).toEqual(["processed", "processed", "processed"]);
		expect(await statusOf(other.ids)).toEqual(["received"]);
		const failures = await database(env.DB)
			.select()
			.from(eventFailures)
			.where(eq(eventFailures.eventId, broken.id))
			.all();
		expect(failures).toMatchObject([{ handler: "webhook-delivery-status", attempts: 1 }]);
		expect(failures[0]?.lastError).toContain("has no delivery");
	});

	it("rolls back the whole batch when one event's statement fails in D1, then commits each other event once with its record", async () => {
		const { ids, events } = await storedDeliveries(3);
		const other = await storedDeliveries(1);
		const poisoned = { ...(other.events[0] as EventEnvelope), data: { ...other.events[0]?.data, poison: true } };
		let calls = 0;
		// Marks each delivery; for a poisoned event adds a statement D1 refuses at run time (integer overflow).
		const marking: EventHandler = {
			name: "set-marking",
			handles: (e) => e.type === "webhook.received",
			statements(list, _env, db) {
				calls++;
				const rows = list.map((e) => (e.data as { deliveryId: string }).deliveryId);
				const mark = db
					.update(webhookDeliveries)
					.set({ lastError: sql`coalesce(${webhookDeliveries.lastError}, '') || 'marked;'` })
					.where(inArray(webhookDeliveries.id, rows));
				if (!list.some((e) => (e.data as { poison?: boolean }).poison)) return [mark];
				return [mark, db.select({ boom: sql<number>`abs(-9223372036854775807 - 1)` }).from(tenants).limit(1)];
			},
			handle: async () => {
				throw new Error("the consumer runs set-based handlers through statements()");
			},
		};
		const batch = batchOf([...events, poisoned]);

		const outcomes = await handleEventBatch(batch, env, [marking]);

		expect(outcomes.map((o) => o.outcome)).toEqual(["acked", "acked", "acked", "retried"]);
		// Once for the whole batch, then once per event alone.
		expect(calls).toBe(5);
		const marks = await database(env.DB)
			.select({ id: webhookDeliveries.id, lastError: webhookDeliveries.lastError })
			.from(webhookDeliveries)
			.where(inArray(webhookDeliveries.id, [...ids, ...other.ids]))
			.all();
		// The failed batch left nothing behind: each good delivery is marked exactly once, the poisoned one not at all.
		expect(Object.fromEntries(marks.map((m) => [m.id, m.lastError]))).toEqual({
			...Object.fromEntries(ids.map((id) => [id, "marked;"])),
			[other.ids[0] ?? ""]: null,
		});
		expect((await handledOf([...events, poisoned].map((e) => e.id))).map((r) => r.eventId).sort()).toEqual(
			events.map((e) => e.id).sort(),
		);

		// Redelivered together: the good events are skipped, the poisoned one fails again (counted).
		const again = await handleEventBatch(batchOf([events[0], poisoned], 2), env, [marking]);
		expect(again.map((o) => o.outcome)).toEqual(["acked", "retried"]);
		expect(again[0]?.ran).toEqual([]);
		const [failure] = await database(env.DB)
			.select()
			.from(eventFailures)
			.where(eq(eventFailures.eventId, poisoned.id))
			.all();
		expect(failure).toMatchObject({ handler: "set-marking", attempts: 2 });
		expect(failure?.lastError).toMatch(/overflow/i);
	});

	it("records a set-based handler and another handler of the same batch, and clears the other's earlier failure", async () => {
		const { events } = await storedDeliveries(2);
		let effects = 0;
		const counting: EventHandler = {
			name: "set-counting",
			handles: (e) => e.type === "webhook.received",
			async handle() {
				effects++;
			},
		};
		await database(env.DB)
			.insert(eventFailures)
			.values({ eventId: events[0]?.id ?? "", handler: counting.name, attempts: 3, lastError: "down", updatedAt: 1 })
			.run();
		const counted = instrumented();

		const outcomes = await handleEventBatch(batchOf(events, 4), counted.env, [deliveryStatusUpdater, counting]);

		expect(outcomes.map((o) => o.ran)).toEqual([
			["set-counting", "webhook-delivery-status"],
			["set-counting", "webhook-delivery-status"],
		]);
		expect(effects).toBe(2);
		// The lookup, the status updater's batch, and one batch recording the other handler for both events.
		expect(counted.trips()).toBe(3);
		expect(await handledOf(events.map((e) => e.id))).toHaveLength(4);
		expect(
			await database(env.DB)
				.select()
				.from(eventFailures)
				.where(eq(eventFailures.eventId, events[0]?.id ?? ""))
				.all(),
		).toEqual([]);
	});

	it("marks a delivery through handle() as the consumer does through statements()", async () => {
		const { ids, events } = await storedDeliveries(1);
		await deliveryStatusUpdater.handle(events[0] as EventEnvelope, env);
		expect(await deliveryRow(ids[0] ?? "")).toMatchObject({ status: "processed", enqueuedAt: expect.any(Number) });
	});
});
