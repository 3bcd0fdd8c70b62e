/**
 * Rows written on the hot paths, counted as the platform bills them (D1's `meta.rows_written`, the
 * Durable Object cursors' `rowsWritten`) on the real local bindings. The counts are deterministic, so
 * they are asserted exactly: a change that adds a row to a path shows here. bench/rows.mjs reports them.
 */
import { createExecutionContext, createMessageBatch, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { sign as githubSign } from "@octokit/webhooks-methods";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { benchRows, meterD1 } from "../../bench/worker";
import { auditWriter } from "../../src/audit";
import { auditLog, database, eventFailures, processedEvents, webhookDeliveries } from "../../src/db";
import { type EventEnvelope, type EventHandler, handleEventBatch, newEvent } from "../../src/events";
import { rateLimiterFor } from "../../src/ratelimit";
import worker from "../../workers/gateway";
import { BASE, call } from "../helpers/gateway";
import { hsToken, seedTenant } from "../helpers/identity";

const SECRET = "rows-written-github-secret";

/** The env with its D1 metered, and the counter. */
function metered() {
	const { db, counter } = meterD1(env.DB);
	return { env: { ...env, DB: db }, counter };
}

let messages = 0;
function batchOf(events: EventEnvelope[]) {
	return createMessageBatch(
		"edgeway-events",
		events.map((body) => ({ id: `rows-${++messages}`, timestamp: new Date(), attempts: 1, body })),
	);
}

const handledOf = async (eventId: string) =>
	(await database(env.DB).select().from(processedEvents).where(eq(processedEvents.eventId, eventId)).all()).map(
		(r) => r.handler,
	);

describe("rows written per path", () => {
	it("webhook ack writes 5 D1 rows; its processing 2", async () => {
		const tenantId = await seedTenant();
		const token = await hsToken({ tenantId, scopes: ["webhooks:manage"] });
		const created = await call("/v1/webhooks/endpoints", {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: JSON.stringify({ name: "rows", source: "github", secrets: [SECRET] }),
			token,
		});
		const endpoint = (await created.json()) as { id: string };
		const payload = JSON.stringify({ ref: "refs/heads/main" });
		const request = async (deliveryId: string): Promise<Request<unknown, IncomingRequestCfProperties>> =>
			new Request(`${BASE}/webhooks/${endpoint.id}`, {
				method: "POST",
				headers: {
					"content-type": "application/json",
					"x-github-event": "push",
					"x-github-delivery": deliveryId,
					"x-hub-signature-256": await githubSign(SECRET, payload),
				},
				body: payload,
			});
		// Warm the endpoint cache (a read), so only the delivery's own writes are counted.
		const warm = createExecutionContext();
		expect((await worker.fetch(await request("rows-warm-up"), env, warm)).status).toBe(202);
		await waitOnExecutionContext(warm);

		const ack = metered();
		const ctx = createExecutionContext();
		const res = await worker.fetch(await request("rows-1"), ack.env, ctx);
		await waitOnExecutionContext(ctx);
		expect(res.status).toBe(202);
		// The row, its primary key, (endpoint, delivery) unique, the tenant's list index, the partial due index.
		expect(ack.counter.written).toBe(5);

		const { id } = (await res.json()) as { id: string };
		const event = newEvent({
			id: `ev_${id}`,
			type: "webhook.received",
			tenantId,
			source: `webhooks/${endpoint.id}`,
			data: { deliveryId: id, endpointId: endpoint.id, forward: false },
		});
		const processing = metered();
		await worker.queue(batchOf([event]), processing.env);
		const row = await database(env.DB).select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)).get();
		expect(row?.status).toBe("processed");
		// The status update and one processed_events row (WITHOUT ROWID); the old full sweep index cost one more.
		expect(processing.counter.written).toBe(2);
	});

	it("an audit event writes its 4 audit_log rows and no processed_events row; a replay writes nothing", async () => {
		const tenantId = await seedTenant();
		const event = newEvent({
			type: "audit.record",
			tenantId,
			source: "test",
			data: { actor: "system", action: "rows.test" },
		});
		const first = metered();
		await handleEventBatch(batchOf([event]), first.env, [auditWriter]);
		// The record, AUTOINCREMENT's sqlite_sequence, (tenant_id, seq) and (event_id): audit_log_tenant_idx is gone.
		expect(first.counter.written).toBe(4);
		expect(await handledOf(event.id)).toEqual([]);

		const replay = metered();
		const outcomes = await handleEventBatch(batchOf([event]), replay.env, [auditWriter]);
		expect(outcomes[0]?.ran).toEqual(["audit-writer"]);
		expect(replay.counter.written).toBe(0);
		const records = await database(env.DB).select().from(auditLog).where(eq(auditLog.eventId, event.id)).all();
		expect(records).toHaveLength(1);
	});

	it("a handler not flagged idempotent still gets its processed_events row and runs once", async () => {
		let effects = 0;
		const counting: EventHandler = {
			name: "rows-counting",
			handles: (e) => e.type === "rows.thing",
			async handle() {
				effects++;
			},
		};
		const idempotent: EventHandler = { ...counting, name: "rows-idempotent", idempotent: true };
		const event = newEvent({ type: "rows.thing", tenantId: await seedTenant(), source: "test", data: {} });
		await handleEventBatch(batchOf([event]), env, [counting, idempotent]);
		await handleEventBatch(batchOf([event]), env, [counting, idempotent]);
		// The idempotent one ran again (its own key makes that a no-op); the other was skipped.
		expect(effects).toBe(3);
		expect(await handledOf(event.id)).toEqual(["rows-counting"]);
	});

	it("usage recording writes 2 rows per record and no processed_events row", async () => {
		const tenantId = await seedTenant();
		const record = (n: number) => ({
			id: `use_${crypto.randomUUID().replace(/-/g, "")}`,
			time: new Date().toISOString(),
			actor: "jwt:u",
			operation: "chat" as const,
			requested: "openai/ok",
			provider: "openai",
			model: "ok",
			promptTokens: n,
			completionTokens: n,
			estimated: false,
			costMicroUsd: n,
			latencyMs: n,
			status: 200,
			cacheHit: false,
			byok: false,
			attempts: 1,
		});
		const event = newEvent({
			type: "llm.usage",
			tenantId,
			source: "llm",
			data: { records: [record(1), record(2)] },
		});
		const recording = metered();
		await worker.queue(batchOf([event]), recording.env);
		// Each record: its row (WITHOUT ROWID, keyed by id) and the report's index entry.
		expect(recording.counter.written).toBe(4);
		expect(await handledOf(event.id)).toEqual([]);
	});

	it("the rate limiter writes 2 rows for a lease and 3 when the next one returns it", async () => {
		const stub = rateLimiterFor(env, { tenantId: await seedTenant() });
		const policy = {
			rate: { perSecond: 10, burst: 100 },
			monthlyQuota: 1_000_000,
			lease: { maxTokens: 10, ttlMs: 5000 },
		};
		const start = await stub.rowsWritten();
		const first = await stub.acquire({ policy, want: 5, returns: [] });
		// The bucket's row and the lease's (WITHOUT ROWID).
		expect((await stub.rowsWritten()) - start).toBe(2);
		const before = await stub.rowsWritten();
		await stub.acquire({ policy, want: 5, returns: [{ leaseId: first.leaseId ?? "", unspent: 1 }] });
		// The returned lease deleted, the new one inserted, the bucket updated.
		expect((await stub.rowsWritten()) - before).toBe(3);
	});

	it("an idempotent handler clears the failure a dead-lettered event left once its replay succeeds; none to clear writes 0 rows", async () => {
		const handler: EventHandler = {
			name: "rows-idempotent-replay",
			idempotent: true,
			handles: (e) => e.type === "rows.replay",
			async handle() {},
		};
		const event = newEvent({ type: "rows.replay", tenantId: await seedTenant(), source: "test", data: {} });
		const clean = metered();
		await handleEventBatch(batchOf([event]), clean.env, [handler]);
		expect(clean.counter.written).toBe(0);

		// What the failed deliveries before the dead letter left; the replay is a new message (attempts = 1).
		await database(env.DB)
			.insert(eventFailures)
			.values({ eventId: event.id, handler: handler.name, attempts: 8, lastError: "down", updatedAt: 1 })
			.run();
		const replay = metered();
		await handleEventBatch(batchOf([event]), replay.env, [handler]);
		expect(replay.counter.written).toBe(1);
		expect(
			await database(env.DB).select().from(eventFailures).where(eq(eventFailures.eventId, event.id)).all(),
		).toEqual([]);
	});

	it("meters (and serves /__bench/rows) with BENCH_ROWS=1 in development and test only", () => {
		const withBench = (ENVIRONMENT: string) => benchRows({ ...env, BENCH_ROWS: "1", ENVIRONMENT } as Env, "fetch");
		expect(withBench("test")).toBeDefined();
		expect(withBench("development")).toBeDefined();
		expect(withBench("staging")).toBeUndefined();
		expect(withBench("production")).toBeUndefined();
	});
});
