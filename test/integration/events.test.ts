/**
 * The events backbone inside workerd, on the real local D1 and queue: fan-out, per-handler
 * idempotency, retries with back-off, dead letters, replay, the dead-letter admin API and publishing.
 */
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { and, eq } from "drizzle-orm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { auditLog, database, deadLetters, eventFailures, processedEvents } from "../../src/db";
import {
	type ConsumerOptions,
	EVENT_RETRY,
	type EventEnvelope,
	type EventHandler,
	handleEventBatch,
	newEvent,
	publish,
	recordDeadLetter,
	retryDelaySeconds,
} from "../../src/events";
import worker from "../../workers/gateway";
import { call, expectProblem } from "../helpers/gateway";
import { hsToken, seedOperator, seedTenant } from "../helpers/identity";

const OPERATOR = env.OPERATOR_TENANT;

afterEach(() => vi.restoreAllMocks());

/** A test handler that counts its effects and fails its first `failures` calls. */
class CountingHandler implements EventHandler {
	calls = 0;
	effects = 0;
	constructor(
		readonly name: string,
		private readonly types: string[],
		private failures = 0,
		private readonly message = "downstream said no",
	) {}
	handles(event: EventEnvelope): boolean {
		return this.types.includes(event.type);
	}
	async handle(): Promise<void> {
		this.calls++;
		if (this.failures > 0) {
			this.failures--;
			throw new Error(this.message);
		}
		this.effects++;
	}
	/** From now on, fail every call (or stop failing with 0). */
	failNext(times: number) {
		this.failures = times;
	}
}

function testEvent(tenantId: string, type = "test.thing"): EventEnvelope {
	return newEvent({ type, tenantId, source: "test", data: { n: 1 } });
}

let messageCounter = 0;

/**
 * Delivers `bodies` as one batch the way the queue does (`attempts` as on a redelivery), to the consumer
 * with `handlers`, and reports acks, retries and the delay each retry asked for.
 */
async function deliver(
	bodies: unknown[],
	handlers: EventHandler[],
	options: { attempts?: number; consumer?: ConsumerOptions } = {},
) {
	const batch = createMessageBatch(
		"edgeway-events",
		bodies.map((body) => ({
			id: `msg-${++messageCounter}`,
			timestamp: new Date(),
			attempts: options.attempts ?? 1,
			body,
		})),
	);
	const delays = new Map<string, number | undefined>();
	for (const m of batch.messages) {
		const retry = m.retry.bind(m);
		vi.spyOn(m, "retry").mockImplementation((o?: QueueRetryOptions) => {
			delays.set(m.id, o?.delaySeconds);
			retry(o);
		});
	}
	const outcomes = await handleEventBatch(batch, env, handlers, options.consumer);
	const result = await getQueueResult(batch, createExecutionContext());
	return { batch, outcomes, result, delays, ids: batch.messages.map((m) => m.id) };
}

/** Through the Worker's own `queue()` entry point, as Cloudflare calls it. */
async function deliverToWorker(queue: string, bodies: unknown[], attempts = 1) {
	const batch = createMessageBatch(
		queue,
		bodies.map((body) => ({ id: `msg-${++messageCounter}`, timestamp: new Date(), attempts, body })),
	);
	await worker.queue(batch, env);
	return { result: await getQueueResult(batch, createExecutionContext()), ids: batch.messages.map((m) => m.id) };
}

const db = () => database(env.DB);
const processed = (eventId: string) =>
	db().select().from(processedEvents).where(eq(processedEvents.eventId, eventId)).all();
const failuresOf = (eventId: string) =>
	db().select().from(eventFailures).where(eq(eventFailures.eventId, eventId)).all();
const deadLetterOf = (eventId: string) => db().select().from(deadLetters).where(eq(deadLetters.eventId, eventId)).all();

async function adminOf(tenantId?: string) {
	const id = tenantId ?? (await seedTenant());
	return { tenantId: id, token: await hsToken({ tenantId: id, scopes: ["admin"], sub: `admin-${id}` }) };
}

async function operatorAdmin() {
	return adminOf(await seedOperator());
}

/** Runs an event into the dead-letter queue: `handler` fails all 6 deliveries, then the DLQ batch stores it. */
async function deadLetter(event: EventEnvelope, handlers: EventHandler[]) {
	for (let attempts = 1; attempts <= 6; attempts++) {
		const { result } = await deliver([event], handlers, { attempts });
		expect(result.retryMessages).toHaveLength(1);
	}
	const { result } = await deliverToWorker("edgeway-events-dlq", [event]);
	expect(result.explicitAcks).toHaveLength(1);
	const [row] = await deadLetterOf(event.id);
	if (!row) throw new Error("no dead letter");
	return row;
}

describe("events consumer", () => {
	it("runs handlers once when two copies of one event arrive in the same batch", async () => {
		const tenantId = await seedTenant();
		const handler = new CountingHandler("copies", ["test.thing"]);
		const event = testEvent(tenantId);
		const { outcomes, result, ids } = await deliver([event, event], [handler]);
		expect(handler.effects).toBe(1);
		expect(outcomes.map((o) => o.outcome).sort()).toEqual(["acked", "duplicate"]);
		expect(result.explicitAcks.sort()).toEqual([...ids].sort());
	});

	it("fans an event out to every handler that wants it, records each, and acks", async () => {
		const tenantId = await seedTenant();
		const audit = new CountingHandler("audit-like", ["test.thing"]);
		const forward = new CountingHandler("forward-like", ["test.thing", "test.other"]);
		const unrelated = new CountingHandler("unrelated", ["test.other"]);
		const event = testEvent(tenantId);

		const { result, ids } = await deliver([event], [audit, forward, unrelated]);

		expect(result.explicitAcks).toEqual(ids);
		expect(result.retryMessages).toEqual([]);
		expect([audit.effects, forward.effects, unrelated.calls]).toEqual([1, 1, 0]);
		expect((await processed(event.id)).map((r) => r.handler).sort()).toEqual(["audit-like", "forward-like"]);
	});

	it("retries a failed handler with exponential delay, never re-running the handlers that succeeded", async () => {
		const tenantId = await seedTenant();
		const steady = new CountingHandler("steady", ["test.thing"]);
		const flaky = new CountingHandler("flaky", ["test.thing"], 2);
		const event = testEvent(tenantId);

		const first = await deliver([event], [steady, flaky], { attempts: 1 });
		expect(first.result.retryMessages).toEqual([{ msgId: first.ids[0] }]);
		expect(first.result.explicitAcks).toEqual([]);
		expect(first.delays.get(first.ids[0] ?? "")).toBeGreaterThanOrEqual(1);
		expect(first.delays.get(first.ids[0] ?? "")).toBeLessThanOrEqual(2);
		expect(await failuresOf(event.id)).toMatchObject([
			{ handler: "flaky", attempts: 1, lastError: "Error: downstream said no" },
		]);

		const second = await deliver([event], [steady, flaky], { attempts: 2 });
		expect(second.result.retryMessages).toHaveLength(1);
		expect(second.delays.get(second.ids[0] ?? "")).toBeGreaterThanOrEqual(2);
		expect(second.delays.get(second.ids[0] ?? "")).toBeLessThanOrEqual(4);
		expect(second.outcomes[0]).toMatchObject({ outcome: "retried", ran: [], failed: ["flaky"] });
		expect(steady.calls).toBe(1);

		const third = await deliver([event], [steady, flaky], { attempts: 3 });
		expect(third.result.explicitAcks).toEqual(third.ids);
		expect(third.outcomes[0]).toMatchObject({ outcome: "acked", ran: ["flaky"], failed: [] });
		expect({ steady: steady.effects, flaky: flaky.effects, flakyCalls: flaky.calls }).toEqual({
			steady: 1,
			flaky: 1,
			flakyCalls: 3,
		});
		expect(await failuresOf(event.id)).toEqual([]);

		// A duplicate delivery (at-least-once) has no effect at all.
		const duplicate = await deliver([event], [steady, flaky], { attempts: 1 });
		expect(duplicate.result.explicitAcks).toEqual(duplicate.ids);
		expect([steady.calls, flaky.calls]).toEqual([1, 3]);
	});

	it("settles each message of a batch on its own: one failing or invalid message does not touch the others", async () => {
		const tenantId = await seedTenant();
		const picky = new CountingHandler("picky", ["test.fails"], 99);
		const fine = new CountingHandler("fine", ["test.thing"]);
		const ok = testEvent(tenantId);
		const failing = testEvent(tenantId, "test.fails");

		const { result, ids } = await deliver([ok, failing, { not: "an event" }], [picky, fine]);

		expect(result.explicitAcks.sort()).toEqual([ids[0], ids[2]].sort());
		expect(result.retryMessages).toEqual([{ msgId: ids[1] }]);
		expect(fine.effects).toBe(1);
	});

	it("retries an event whose handler hangs past the timeout, and one whose handles() throws", async () => {
		const tenantId = await seedTenant();
		const hung: EventHandler = { name: "hung", handles: () => true, handle: () => new Promise(() => {}) };
		const broken: EventHandler = {
			name: "broken",
			handles: () => {
				throw new Error("bad filter");
			},
			handle: async () => {},
		};
		const event = testEvent(tenantId);

		const { result, outcomes } = await deliver([event], [hung, broken], { consumer: { handlerTimeoutMs: 50 } });

		expect(result.retryMessages).toHaveLength(1);
		expect(outcomes[0]?.failed).toEqual(["broken", "hung"]);
		const errors = Object.fromEntries((await failuresOf(event.id)).map((f) => [f.handler, f.lastError]));
		expect(errors).toEqual({
			hung: "Error: handler hung timed out after 50 ms",
			broken: "handles() threw: Error: bad filter",
		});
	});

	it("records a handler's error without secrets and bounded in length", async () => {
		const tenantId = await seedTenant();
		const leaky = new CountingHandler(
			"leaky",
			["test.thing"],
			1,
			`POST https://user:hunter2@example.com/hook?token=abc123 failed with Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln key ew_live_0123456789abcdef secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ${"x".repeat(2000)}`,
		);
		const event = testEvent(tenantId);

		await deliver([event], [leaky]);

		const [failure] = await failuresOf(event.id);
		expect(failure?.lastError.length).toBeLessThanOrEqual(500);
		for (const secret of ["hunter2", "abc123", "eyJhbGciOiJIUzI1NiJ9", "ew_live_0123456789abcdef", "whsec_MfKQ9r8"]) {
			expect(failure?.lastError).not.toContain(secret);
		}
		expect(failure?.lastError).toContain("[redacted]");
	});

	it("backs off exponentially up to five minutes, jittered, and not at all with a zero base", () => {
		const top = (a: number) => retryDelaySeconds(a, EVENT_RETRY, () => 0);
		expect([1, 2, 3, 4, 5, 6, 8, 9, 40].map(top)).toEqual([2, 4, 8, 16, 32, 64, 256, 300, 300]);
		expect(retryDelaySeconds(4, EVENT_RETRY, () => 0.999)).toBe(8);
		expect(retryDelaySeconds(1, { baseSeconds: 0, maxSeconds: 300, jitter: 0.5 })).toBe(0);
	});
});

describe("events: the Worker's queue entry point", () => {
	it("dead-letters an invalid message at once and acks it, never retrying it", async () => {
		await operatorAdmin();
		const { result, ids } = await deliverToWorker("edgeway-events", [
			{ hello: "not an envelope" },
			{ ...testEvent("t"), type: "Not-Dotted" },
		]);

		expect(result.explicitAcks.sort()).toEqual([...ids].sort());
		expect(result.retryMessages).toEqual([]);
		for (const id of ids) {
			const [row] = await deadLetterOf(`msg:${id}`);
			expect(row).toMatchObject({ tenantId: OPERATOR, type: "invalid", status: "dead", attempts: 1 });
			expect(row?.error).toMatch(/^Invalid event envelope: /);
		}
		const [second] = await deadLetterOf(`msg:${ids[1]}`);
		expect(second?.error).toContain("type");
	});

	it("acks a valid event no registered handler wants", async () => {
		const { result, ids } = await deliverToWorker("edgeway-events", [testEvent(await seedTenant(), "test.nobody")]);
		expect(result.explicitAcks).toEqual(ids);
	});

	it("runs the registered audit writer once per event, through the real local queue and again on redelivery", async () => {
		const tenantId = await seedTenant();
		const event = newEvent({
			type: "audit.record",
			tenantId,
			source: "test",
			data: { actor: "system", action: "test.queued", target: "thing:1" },
		});
		const records = () => db().select().from(auditLog).where(eq(auditLog.eventId, event.id)).all();

		await publish(env, event);
		await vi.waitUntil(async () => (await records()).length > 0, { timeout: 10_000, interval: 50 });
		const { result, ids } = await deliverToWorker("edgeway-events", [event], 2);

		expect(result.explicitAcks).toEqual(ids);
		expect(await records()).toMatchObject([{ tenantId, action: "test.queued", target: "thing:1" }]);
		// Idempotent by UNIQUE(event_id): the redelivery wrote nothing, and no processed_events row is kept.
		expect(await processed(event.id)).toEqual([]);
	});

	it("sends the dead-letter queues of every environment (names ending in -dlq) to the dead-letter consumer", async () => {
		const tenantId = await seedTenant();
		const event = testEvent(tenantId);
		const { result } = await deliverToWorker("edgeway-staging-events-dlq", [event]);
		expect(result.explicitAcks).toHaveLength(1);
		expect(await deadLetterOf(event.id)).toMatchObject([{ tenantId, status: "dead", attempts: 0 }]);
	});
});

describe("dead letters", () => {
	it("stores a dead event with its failing handler's last error and attempt count", async () => {
		const tenantId = await seedTenant();
		const steady = new CountingHandler("steady", ["test.thing"]);
		const broken = new CountingHandler("broken", ["test.thing"], 99, "upstream 503");
		const event = testEvent(tenantId);

		const row = await deadLetter(event, [steady, broken]);

		expect(row).toMatchObject({
			eventId: event.id,
			tenantId,
			type: "test.thing",
			status: "dead",
			attempts: 6,
			error: "broken: Error: upstream 503",
			event,
		});
		expect(row.id).toMatch(/^dl_[0-9a-f]{32}$/);
		expect([steady.effects, broken.calls]).toEqual([1, 6]);
	});

	it("replays the same event so only the failed handler runs: effects exactly once, even replayed twice", async () => {
		const { tenantId, token } = await adminOf();
		const steady = new CountingHandler("steady", ["test.thing"]);
		const broken = new CountingHandler("broken", ["test.thing"], 99);
		const event = testEvent(tenantId);
		const row = await deadLetter(event, [steady, broken]);
		const send = vi.spyOn(env.EVENTS, "send");

		const res = await call(`/v1/admin/dead-letters/${row.id}/replay`, { method: "POST", token });
		expect(res.status).toBe(200);
		expect(await res.json()).toMatchObject({ replayed: true, deadLetter: { id: row.id, status: "replayed" } });
		expect(send).toHaveBeenCalledTimes(1);
		const republished = send.mock.calls[0]?.[0] as EventEnvelope;
		expect(republished).toEqual(event);

		// The queue delivers the replayed event; the broken handler works again now.
		broken.failNext(0);
		const redelivery = await deliver([republished], [steady, broken]);
		expect(redelivery.result.explicitAcks).toEqual(redelivery.ids);
		expect({ steady: steady.effects, broken: broken.effects }).toEqual({ steady: 1, broken: 1 });

		const again = await call(`/v1/admin/dead-letters/${row.id}/replay`, { method: "POST", token });
		expect(await again.json()).toMatchObject({ replayed: false, deadLetter: { status: "replayed" } });
		expect(send).toHaveBeenCalledTimes(1);
		// Were the event delivered once more anyway, nothing would happen twice.
		await deliver([republished], [steady, broken]);
		expect({ steady: steady.effects, broken: broken.effects }).toEqual({ steady: 1, broken: 1 });

		const audits = await db()
			.select()
			.from(auditLog)
			.where(and(eq(auditLog.tenantId, tenantId), eq(auditLog.action, "dead_letter.replay")))
			.all();
		expect(audits).toMatchObject([
			{ actor: `jwt:admin-${tenantId}`, target: `dead_letter:${row.id}`, metadata: { eventId: event.id } },
		]);
	});

	it("dead-letters a replayed event that fails again into the same row, back to dead with the new error", async () => {
		const { tenantId, token } = await adminOf();
		const broken = new CountingHandler("broken", ["test.thing"], 99, "first cause");
		const event = testEvent(tenantId);
		const row = await deadLetter(event, [broken]);
		await call(`/v1/admin/dead-letters/${row.id}/replay`, { method: "POST", token });

		const again = new CountingHandler("broken", ["test.thing"], 99, "second cause");
		const second = await deadLetter(event, [again]);

		expect(second).toMatchObject({ id: row.id, status: "dead", attempts: 12, error: "broken: Error: second cause" });
		expect(second.replayedAt).not.toBeNull();
		expect(await deadLetterOf(event.id)).toHaveLength(1);
	});

	it("refuses to replay a message that was not a valid event (409) but lets the operator inspect it", async () => {
		const { token } = await operatorAdmin();
		const { ids } = await deliverToWorker("edgeway-events", [{ garbage: true }]);
		const [row] = await deadLetterOf(`msg:${ids[0]}`);
		if (!row) throw new Error("not stored");

		const inspected = await call(`/v1/admin/dead-letters/${row.id}`, { token });
		expect(await inspected.json()).toMatchObject({ replayable: false, event: { garbage: true } });
		await expectProblem(
			await call(`/v1/admin/dead-letters/${row.id}/replay`, { method: "POST", token }),
			409,
			"conflict",
		);
	});
});

describe("dead-letter admin API", () => {
	const bulk = (token: string, body: unknown) =>
		call("/v1/admin/dead-letters/replay", {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: JSON.stringify(body),
			token,
		});

	async function seedDeadLetters(tenantId: string, count: number): Promise<EventEnvelope[]> {
		const events = Array.from({ length: count }, () => testEvent(tenantId));
		for (const e of events) await recordDeadLetter(env, e);
		return events;
	}

	it("lists newest first with cursor pagination and a status filter", async () => {
		const { tenantId, token } = await adminOf();
		const events = await seedDeadLetters(tenantId, 5);

		const seen: string[] = [];
		let cursor: string | null = null;
		do {
			const query: string = cursor ? `?limit=2&cursor=${cursor}` : "?limit=2";
			const res = await call(`/v1/admin/dead-letters${query}`, { token });
			expect(res.status).toBe(200);
			const page = (await res.json()) as { deadLetters: Array<{ eventId: string }>; nextCursor: string | null };
			expect(page.deadLetters.length).toBeLessThanOrEqual(2);
			seen.push(...page.deadLetters.map((d) => d.eventId));
			cursor = page.nextCursor;
		} while (cursor);
		expect(seen).toEqual(events.map((e) => e.id).reverse());

		const [first] = await deadLetterOf(events[0]?.id ?? "");
		await call(`/v1/admin/dead-letters/${first?.id}/replay`, { method: "POST", token });
		const replayed = await (await call("/v1/admin/dead-letters?status=replayed", { token })).json();
		expect(replayed).toMatchObject({ deadLetters: [{ id: first?.id, status: "replayed" }], nextCursor: null });
		const dead = (await (await call("/v1/admin/dead-letters?status=dead", { token })).json()) as {
			deadLetters: unknown[];
		};
		expect(dead.deadLetters).toHaveLength(4);
	});

	it("is documented in /openapi.json", async () => {
		const doc = (await (await call("/openapi.json")).json()) as { paths: Record<string, Record<string, unknown>> };
		expect(Object.keys(doc.paths["/v1/admin/dead-letters"] ?? {})).toEqual(["get"]);
		expect(Object.keys(doc.paths["/v1/admin/dead-letters/{id}"] ?? {})).toEqual(["get"]);
		expect(Object.keys(doc.paths["/v1/admin/dead-letters/{id}/replay"] ?? {})).toEqual(["post"]);
		expect(Object.keys(doc.paths["/v1/admin/dead-letters/replay"] ?? {})).toEqual(["post"]);
	});

	it("answers a bad cursor, id or filter with a 400 problem", async () => {
		const { token } = await adminOf();
		await expectProblem(await call("/v1/admin/dead-letters?cursor=bm9wZQ", { token }), 400, "validation-failed");
		await expectProblem(await call("/v1/admin/dead-letters?status=lost", { token }), 400, "validation-failed");
		await expectProblem(await call("/v1/admin/dead-letters/not-an-id", { token }), 400, "validation-failed");
		await expectProblem(await bulk(token, { ids: [] }), 400, "validation-failed");
		await expectProblem(await bulk(token, { all: true, limit: 101 }), 400, "validation-failed");
	});

	it("replays in bulk, oldest first, at most `limit` per call, and says when more remain", async () => {
		const { tenantId, token } = await adminOf();
		const events = await seedDeadLetters(tenantId, 3);
		const sendBatch = vi.spyOn(env.EVENTS, "sendBatch");
		const send = vi.spyOn(env.EVENTS, "send");

		const first = await (await bulk(token, { all: true, limit: 2 })).json();
		expect(first).toMatchObject({ skipped: [], more: true });
		expect([...(sendBatch.mock.calls[0]?.[0] ?? [])].map((m) => (m.body as EventEnvelope).id)).toEqual(
			events.slice(0, 2).map((e) => e.id),
		);
		const second = await (await bulk(token, { all: true })).json();
		expect(second).toMatchObject({ more: false });
		expect(send.mock.calls.map((c) => (c[0] as EventEnvelope).id)).toEqual([events[2]?.id]);
		const third = await (await bulk(token, { all: true })).json();
		expect(third).toEqual({ replayed: [], skipped: [], more: false });

		const audits = await db()
			.select()
			.from(auditLog)
			.where(and(eq(auditLog.tenantId, tenantId), eq(auditLog.action, "dead_letter.replay")))
			.all();
		expect(audits).toHaveLength(3);
	});

	it("replays by id, skipping the replayed ones and ids it does not know", async () => {
		const { tenantId, token } = await adminOf();
		const events = await seedDeadLetters(tenantId, 2);
		const rows = await Promise.all(events.map(async (e) => (await deadLetterOf(e.id))[0]?.id ?? ""));
		await call(`/v1/admin/dead-letters/${rows[0]}/replay`, { method: "POST", token });
		const unknown = `dl_${"0".repeat(32)}`;

		const res = await bulk(token, { ids: [rows[0], rows[1], unknown, rows[1]] });

		expect(await res.json()).toEqual({
			replayed: [rows[1]],
			skipped: [
				{ id: rows[0], reason: "already-replayed" },
				{ id: unknown, reason: "not-found" },
			],
			more: false,
		});
	});

	it("keeps tenants apart: A can neither list, inspect nor replay B's dead letters (404)", async () => {
		const a = await adminOf();
		const b = await adminOf();
		const [bEvent] = await seedDeadLetters(b.tenantId, 1);
		const [bRow] = await deadLetterOf(bEvent?.id ?? "");
		if (!bRow) throw new Error("not stored");
		const send = vi.spyOn(env.EVENTS, "send");

		const listed = (await (await call("/v1/admin/dead-letters", { token: a.token })).json()) as {
			deadLetters: unknown[];
		};
		expect(listed.deadLetters).toEqual([]);
		await expectProblem(await call(`/v1/admin/dead-letters/${bRow.id}`, { token: a.token }), 404, "not-found");
		await expectProblem(
			await call(`/v1/admin/dead-letters/${bRow.id}/replay`, { method: "POST", token: a.token }),
			404,
			"not-found",
		);
		expect(await (await bulk(a.token, { ids: [bRow.id] })).json()).toEqual({
			replayed: [],
			skipped: [{ id: bRow.id, reason: "not-found" }],
			more: false,
		});
		expect(await (await bulk(a.token, { all: true })).json()).toMatchObject({ replayed: [] });

		expect(send).not.toHaveBeenCalled();
		expect(await deadLetterOf(bRow.eventId)).toMatchObject([{ status: "dead", replayedAt: null }]);
		const own = (await (await call("/v1/admin/dead-letters", { token: b.token })).json()) as {
			deadLetters: Array<{ id: string }>;
		};
		expect(own.deadLetters.map((d) => d.id)).toEqual([bRow.id]);
	});

	it("undoes the claim when the queue refuses the replay, so it can be replayed later", async () => {
		const { tenantId, token } = await adminOf();
		const [event] = await seedDeadLetters(tenantId, 1);
		const [row] = await deadLetterOf(event?.id ?? "");
		vi.spyOn(env.EVENTS, "send").mockRejectedValueOnce(new Error("Queue send failed: Too Many Requests"));

		await expectProblem(
			await call(`/v1/admin/dead-letters/${row?.id}/replay`, { method: "POST", token }),
			503,
			"dependency-unavailable",
		);
		expect(await deadLetterOf(event?.id ?? "")).toMatchObject([{ status: "dead", replayedAt: null }]);
		const retried = await call(`/v1/admin/dead-letters/${row?.id}/replay`, { method: "POST", token });
		expect(await retried.json()).toMatchObject({ replayed: true });
	});
});

describe("publish", () => {
	it("sends one event with send() and more than 100 in sendBatch() calls of at most 100", async () => {
		const tenantId = await seedTenant();
		const send = vi.spyOn(env.EVENTS, "send");
		const sendBatch = vi.spyOn(env.EVENTS, "sendBatch");

		await publish(env, testEvent(tenantId, "test.published"));
		await publish(
			env,
			Array.from({ length: 250 }, () => testEvent(tenantId, "test.published")),
		);

		expect(send).toHaveBeenCalledTimes(1);
		expect(sendBatch.mock.calls.map((c) => [...c[0]].length)).toEqual([100, 100, 50]);
	});

	it("keeps each sendBatch() under 256 KB and refuses an event over 128 KB before sending anything", async () => {
		const tenantId = await seedTenant();
		const sendBatch = vi.spyOn(env.EVENTS, "sendBatch");
		const big = () =>
			newEvent({ type: "test.published", tenantId, source: "test", data: { blob: "x".repeat(60_000) } });

		await publish(env, [big(), big(), big(), big(), big()]);
		expect(sendBatch.mock.calls.map((c) => [...c[0]].length)).toEqual([4, 1]);

		sendBatch.mockClear();
		const huge = newEvent({ type: "test.published", tenantId, source: "test", data: { blob: "x".repeat(130_000) } });
		await expect(publish(env, [big(), huge])).rejects.toThrow(/at most 128000/);
		expect(sendBatch).not.toHaveBeenCalled();
	});

	it("refuses an invalid envelope", async () => {
		await expect(publish(env, { ...testEvent("t"), type: "NoDots" })).rejects.toThrow();
	});
});
