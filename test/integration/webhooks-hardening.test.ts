/**
 * A webhook sender can never wedge ingest or the sweep: what a sender gives is bounded before it is
 * stored, ingest is admitted (the endpoint's bucket and the tenant's, counted in its quota), a refused
 * enqueue is recorded so a redelivery re-enqueues at once, and the sweep is fair, backs off and parks.
 */
import { env } from "cloudflare:workers";
import { and, eq, inArray } from "drizzle-orm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { auditLog, database, tenants, webhookDeliveries, webhookEndpoints } from "../../src/db";
import type { EventEnvelope } from "../../src/events";
import {
	deliveryEventId,
	ENQUEUE_RETRY_AFTER_S,
	enqueueBackoffMs,
	MAX_ENQUEUE_FAILURES,
	REQUEUE_AFTER_MS,
	recordEnqueueFailures,
	SWEEP_BATCH,
	sweepWebhookDeliveries,
} from "../../src/webhooks";
import { call, expectProblem } from "../helpers/gateway";
import { hsToken, uniqueId } from "../helpers/identity";
import {
	createEndpoint,
	deliverGithub,
	deliverStripe,
	deliveryRow,
	endpointRows,
	SECRET,
	seedStoredDelivery,
	tenantWithGithubEndpoint,
	tenantWithToken,
} from "../helpers/webhooks";

afterEach(() => vi.restoreAllMocks());

/** The EVENTS binding, refusing every event of the given deliveries (as a queue that cannot take them). */
function refusingQueue(refused: (deliveryId: string) => boolean): Env {
	const deliveryOf = (body: unknown) => String((body as EventEnvelope).data?.deliveryId ?? "");
	const events = {
		send: async (body: unknown, options?: QueueSendOptions) => {
			if (refused(deliveryOf(body))) throw new Error("simulated: queue refused the message");
			return env.EVENTS.send(body, options);
		},
		sendBatch: async (messages: Iterable<MessageSendRequest>, options?: QueueSendBatchOptions) => {
			const list = [...messages];
			if (list.some((m) => refused(deliveryOf(m.body)))) throw new Error("simulated: queue refused the batch");
			return env.EVENTS.sendBatch(list, options);
		},
	};
	return { ...env, EVENTS: events as unknown as Env["EVENTS"] };
}

describe("what a sender gives is bounded before anything is stored", () => {
	it("refuses a correctly signed 128 KB delivery id or event type with 400 and stores nothing", async () => {
		const { token } = await tenantWithToken("pro"); // 1 MiB bodies
		const secret = "whsec_stripe_0123456789abcdef";
		const endpoint = await createEndpoint(token, { name: "stripe", source: "stripe", secrets: [secret] });
		const huge = "x".repeat(128 * 1024);
		const longId = await deliverStripe(endpoint.id, secret, JSON.stringify({ id: `evt_${huge}`, type: "a.b" }));
		const idProblem = await expectProblem(longId, 400, "validation-failed");
		expect(idProblem.errors?.map((e) => e.path)).toEqual(["delivery.id"]);
		const longType = await deliverStripe(endpoint.id, secret, JSON.stringify({ id: "evt_1", type: huge }));
		const typeProblem = await expectProblem(longType, 400, "validation-failed");
		expect(typeProblem.errors?.map((e) => e.path)).toEqual(["delivery.eventType"]);
		expect(await endpointRows(endpoint.id)).toEqual([]);
		// At the bound it is taken.
		const atBound = await deliverStripe(
			endpoint.id,
			secret,
			JSON.stringify({ id: `evt_${"y".repeat(252)}`, type: "t".repeat(128) }),
		);
		expect(atBound.status).toBe(202);
	});

	it("refuses an over-long or non-ASCII header value (delivery id, event type) with 400", async () => {
		const { endpoint } = await tenantWithGithubEndpoint();
		await expectProblem(await deliverGithub(endpoint.id, "{}", "d".repeat(257)), 400, "validation-failed");
		await expectProblem(
			await deliverGithub(endpoint.id, "{}", "ok-id", SECRET, "p\u00e9ch\u00e9"),
			400,
			"validation-failed",
		);
		expect(await endpointRows(endpoint.id)).toEqual([]);
	});
});

describe("ingest admission", () => {
	it("admits exactly an endpoint's burst out of a concurrent flood and answers the rest 429 with Retry-After", async () => {
		const { token } = await tenantWithToken("pro", { webhooks: { perEndpoint: { perSecond: 0.001, burst: 5 } } });
		const flooded = await createEndpoint(token, { name: "flooded", source: "github", secrets: [SECRET] });
		const other = await createEndpoint(token, { name: "other", source: "github", secrets: [SECRET] });
		const responses = await Promise.all(
			Array.from({ length: 40 }, (_, i) => deliverGithub(flooded.id, JSON.stringify({ i }), `flood-${i}`)),
		);
		const statuses = responses.map((r) => r.status);
		expect(statuses.filter((s) => s === 202)).toHaveLength(5);
		expect(statuses.filter((s) => s === 429)).toHaveLength(35);
		const refused = responses.find((r) => r.status === 429);
		if (!refused) throw new Error("expected a refusal");
		expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
		await expectProblem(refused, 429, "rate-limited");
		await Promise.all(responses.map((r) => r.arrayBuffer().catch(() => undefined)));
		expect(await endpointRows(flooded.id)).toHaveLength(5);
		// The endpoint's bucket is its own: another endpoint of the tenant is still admitted.
		const admitted = await deliverGithub(other.id, "{}", "other-1");
		expect(admitted.status).toBe(202);
		expect(admitted.headers.get("ratelimit-policy")).toMatch(/^"endpoint-burst";q=5;w=\d+, "burst";q=200;/);
	});

	it("counts deliveries in the tenant's monthly quota, shared with its API calls", async () => {
		const { endpoint, ...tenant } = await tenantWithGithubEndpoint("pro", { monthlyQuota: 5 }); // 1: creating the endpoint
		const api = await hsToken({ tenantId: tenant.tenantId, scopes: ["api:read"] });
		expect((await call("/v1/me", { token: api })).status).toBe(200); // 2
		const statuses: number[] = [];
		for (let i = 0; i < 5; i++) statuses.push((await deliverGithub(endpoint.id, "{}", `quota-${i}`)).status);
		expect(statuses).toEqual([202, 202, 202, 429, 429]);
		await expectProblem(await deliverGithub(endpoint.id, "{}", "quota-late"), 429, "quota-exceeded");
		await expectProblem(await call("/v1/me", { token: api }), 429, "quota-exceeded");
		expect(await endpointRows(endpoint.id)).toHaveLength(3);
	});

	it("hands the tokens back for a duplicate and for a 503, so retrying through an outage spends no quota", async () => {
		const { endpoint } = await tenantWithGithubEndpoint("pro", { monthlyQuota: 5 }); // 1: creating the endpoint
		const sends = vi.spyOn(env.EVENTS, "send").mockRejectedValue(new Error("queue unavailable"));
		for (let i = 0; i < 3; i++) {
			await expectProblem(await deliverGithub(endpoint.id, "{}", "outage-1"), 503, "dependency-unavailable");
		}
		sends.mockRestore();
		expect((await deliverGithub(endpoint.id, "{}", "outage-1")).status).toBe(200); // a duplicate, now queued
		const statuses: number[] = [];
		for (let i = 2; i <= 5; i++) statuses.push((await deliverGithub(endpoint.id, "{}", `outage-${i}`)).status);
		expect(statuses).toEqual([202, 202, 202, 202]); // 2 … 5
		await expectProblem(await deliverGithub(endpoint.id, "{}", "outage-6"), 429, "quota-exceeded");
	});
});

describe("a delivery whose event never reached the queue", () => {
	it("is re-enqueued at once by a redelivery when the queue refused the first attempt", async () => {
		const { endpoint } = await tenantWithGithubEndpoint();
		const sends = vi.spyOn(env.EVENTS, "send").mockRejectedValueOnce(new Error("queue unavailable"));
		await expectProblem(await deliverGithub(endpoint.id, "{}", "refused-1"), 503, "dependency-unavailable");
		const [row] = await endpointRows(endpoint.id);
		if (!row) throw new Error("expected the stored row");
		expect(row).toMatchObject({ status: "received", enqueuedAt: null, enqueueFailures: 1 });
		expect(row.lastError).toMatch(/could not be queued/);

		// The sender retries at once: the refusal is on record, so the event goes out now.
		expect(await (await deliverGithub(endpoint.id, "{}", "refused-1")).json()).toEqual({ id: row.id, duplicate: true });
		const ownSends = () =>
			sends.mock.calls.filter((c) => (c[0] as EventEnvelope).id === deliveryEventId(row.id)).length;
		expect(ownSends()).toBe(2);
		await expect.poll(async () => (await deliveryRow(row.id))?.status, { timeout: 15_000 }).toBe("processed");
	});

	it("is re-enqueued by a redelivery when the request that stored it died before sending", async () => {
		const { tenantId, endpoint } = await tenantWithGithubEndpoint();
		// The row as the ingest wrote it, with nothing after: no send, no refusal recorded.
		const storedAt = Date.now() - REQUEUE_AFTER_MS - 1000;
		const id = await seedStoredDelivery(
			{ tenantId, id: endpoint.id },
			{ deliveryId: "died-1", receivedAt: storedAt, nextEnqueueAt: storedAt + 60_000 },
		);
		const sends = vi.spyOn(env.EVENTS, "send");
		expect(await (await deliverGithub(endpoint.id, "{}", "died-1")).json()).toEqual({ id, duplicate: true });
		expect(sends.mock.calls.filter((c) => (c[0] as EventEnvelope).id === deliveryEventId(id))).toHaveLength(1);
		await expect.poll(async () => (await deliveryRow(id))?.status, { timeout: 15_000 }).toBe("processed");
	});
});

describe("a sender retrying while the queue refuses", () => {
	it("cannot park the delivery by retrying faster than the backoff, and is answered 503 until it is queued", async () => {
		const { tenantId, endpoint } = await tenantWithGithubEndpoint();
		const sends = vi.spyOn(env.EVENTS, "send").mockRejectedValue(new Error("queue unavailable"));
		const first = await deliverGithub(endpoint.id, "{}", "outage-fast");
		expect(first.headers.get("retry-after")).toBe(String(ENQUEUE_RETRY_AFTER_S));
		await expectProblem(first, 503, "dependency-unavailable");
		const [stored] = await endpointRows(endpoint.id);
		if (!stored) throw new Error("expected the stored row");

		// Well within the backoff: each redelivery tries the queue again, but its refusal is not counted.
		for (let i = 0; i < MAX_ENQUEUE_FAILURES + 2; i++) {
			const again = await deliverGithub(endpoint.id, "{}", "outage-fast");
			expect(again.headers.get("retry-after")).toBe(String(ENQUEUE_RETRY_AFTER_S));
			await expectProblem(again, 503, "dependency-unavailable");
		}
		expect(await deliveryRow(stored.id)).toMatchObject({ status: "received", enqueueFailures: 1 });
		expect(sends.mock.calls.filter((c) => (c[0] as EventEnvelope).id === deliveryEventId(stored.id))).toHaveLength(
			MAX_ENQUEUE_FAILURES + 3,
		);

		// Once the row is due, a redelivery's refusal counts, as the sweep's would.
		await database(env.DB)
			.update(webhookDeliveries)
			.set({ nextEnqueueAt: Date.now() - 1 })
			.where(eq(webhookDeliveries.id, stored.id))
			.run();
		await expectProblem(await deliverGithub(endpoint.id, "{}", "outage-fast"), 503, "dependency-unavailable");
		expect(await deliveryRow(stored.id)).toMatchObject({ status: "received", enqueueFailures: 2 });

		// The queue is back: the next redelivery puts the event on it and is answered as stored.
		sends.mockRestore();
		expect(await (await deliverGithub(endpoint.id, "{}", "outage-fast")).json()).toEqual({
			id: stored.id,
			duplicate: true,
		});
		const audit = await database(env.DB)
			.select()
			.from(auditLog)
			.where(and(eq(auditLog.tenantId, tenantId), eq(auditLog.action, "webhook_delivery.parked")))
			.all();
		expect(audit).toEqual([]);
	});
});

describe("parking", () => {
	/** A stored delivery of a fresh tenant with `enqueueFailures` refusals on record. */
	async function storedRow(enqueueFailures: number, enqueuedAt: number | null = null) {
		const { tenantId, token, endpoint } = await tenantWithGithubEndpoint();
		const id = await seedStoredDelivery(
			{ tenantId, id: endpoint.id },
			{ enqueueFailures, enqueuedAt, nextEnqueueAt: Date.now() },
		);
		const parkedRecords = () =>
			database(env.DB)
				.select()
				.from(auditLog)
				.where(and(eq(auditLog.tenantId, tenantId), eq(auditLog.action, "webhook_delivery.parked")))
				.all();
		return { delivery: { id, tenantId, endpointId: endpoint.id }, token, parkedRecords };
	}
	const refusal = new Error("queue unavailable");

	it("writes one audit record when two refusals park the same row at once", async () => {
		const { delivery, parkedRecords } = await storedRow(MAX_ENQUEUE_FAILURES - 1);
		const failure = { delivery, failuresBefore: MAX_ENQUEUE_FAILURES - 1, error: refusal };
		const [a, b] = await Promise.all([
			recordEnqueueFailures(env, [failure], Date.now()),
			recordEnqueueFailures(env, [failure], Date.now()),
		]);
		expect([...(a ?? []), ...(b ?? [])]).toEqual([delivery.id]);
		expect((await parkedRecords()).map((r) => r.target)).toEqual([`webhook_delivery:${delivery.id}`]);
		expect(await deliveryRow(delivery.id)).toMatchObject({ status: "parked", enqueueFailures: MAX_ENQUEUE_FAILURES });
	});

	it("neither parks nor audits a row the consumer has already moved on", async () => {
		const { delivery, parkedRecords } = await storedRow(MAX_ENQUEUE_FAILURES - 1, Date.now());
		const failure = { delivery, failuresBefore: MAX_ENQUEUE_FAILURES - 1, error: refusal };
		expect(await recordEnqueueFailures(env, [failure], Date.now())).toEqual([]);
		expect(await parkedRecords()).toEqual([]);
		expect(await deliveryRow(delivery.id)).toMatchObject({ status: "received" });
	});

	it("replays a delivery that was never queued under its original event id, so a sweep copy is the same event", async () => {
		const { delivery, token } = await storedRow(MAX_ENQUEUE_FAILURES);
		await database(env.DB)
			.update(webhookDeliveries)
			.set({ status: "parked" })
			.where(eq(webhookDeliveries.id, delivery.id))
			.run();
		const sends = vi.spyOn(env.EVENTS, "send");
		const replay = await call(`/v1/webhooks/deliveries/${delivery.id}/replay`, { method: "POST", token });
		expect(replay.status).toBe(202);
		expect(await replay.json()).toEqual({ id: delivery.id, eventId: deliveryEventId(delivery.id) });
		expect(sends.mock.calls.map((c) => (c[0] as EventEnvelope).id)).toEqual([deliveryEventId(delivery.id)]);
		// The sweep, once the replay's grace has passed (if no consumer has run it yet), sends only that id.
		sends.mockClear();
		await sweepWebhookDeliveries(env, Date.now() + 120_000);
		const ids = sends.mock.calls
			.map((c) => (c[0] as EventEnvelope).id)
			.filter((id) => id.startsWith(`ev_${delivery.id}`));
		expect(new Set([deliveryEventId(delivery.id), ...ids])).toEqual(new Set([deliveryEventId(delivery.id)]));
		await expect.poll(async () => (await deliveryRow(delivery.id))?.status, { timeout: 15_000 }).toBe("processed");
	});
});

describe("the sweep", () => {
	it("backs off a delivery the queue keeps refusing, parks it with an audit record, and a replay brings it back", async () => {
		const { tenantId, token, endpoint } = await tenantWithGithubEndpoint();
		vi.spyOn(env.EVENTS, "send").mockRejectedValueOnce(new Error("queue unavailable"));
		await expectProblem(await deliverGithub(endpoint.id, "{}", "stuck-1"), 503, "dependency-unavailable");
		vi.restoreAllMocks();
		const [stored] = await endpointRows(endpoint.id);
		if (!stored) throw new Error("expected the stored row");
		const id = stored.id;
		const refusing = refusingQueue((deliveryId) => deliveryId === id);

		// Each sweep before the backoff has passed leaves the row alone; each one after counts a refusal.
		let now = Date.now();
		for (let failures = 1; failures < MAX_ENQUEUE_FAILURES; failures++) {
			const row = await deliveryRow(id);
			expect(row).toMatchObject({ status: "received", enqueueFailures: failures });
			expect(row?.nextEnqueueAt).toBeGreaterThanOrEqual(now + enqueueBackoffMs(failures) - 5_000);
			await sweepWebhookDeliveries(refusing, (row?.nextEnqueueAt ?? 0) - 1);
			expect((await deliveryRow(id))?.enqueueFailures).toBe(failures);
			now = row?.nextEnqueueAt ?? 0;
			await sweepWebhookDeliveries(refusing, now);
		}
		const parked = await deliveryRow(id);
		expect(parked).toMatchObject({ status: "parked", enqueueFailures: MAX_ENQUEUE_FAILURES });

		// Visible in the delivery API and in the audit log.
		const shown = (await (await call(`/v1/webhooks/deliveries/${id}`, { token })).json()) as Record<string, unknown>;
		expect(shown).toMatchObject({ status: "parked", enqueueFailures: MAX_ENQUEUE_FAILURES });
		expect(String(shown.lastError)).toMatch(/parked after 8 failed attempts/);
		const listed = (await (await call("/v1/webhooks/deliveries?status=parked", { token })).json()) as {
			deliveries: Array<{ id: string }>;
		};
		expect(listed.deliveries.map((d) => d.id)).toEqual([id]);
		const audit = await database(env.DB)
			.select()
			.from(auditLog)
			.where(and(eq(auditLog.tenantId, tenantId), eq(auditLog.action, "webhook_delivery.parked")))
			.all();
		expect(audit.map((a) => a.target)).toEqual([`webhook_delivery:${id}`]);
		expect(audit[0]?.metadata).toMatchObject({ endpointId: endpoint.id, enqueueFailures: MAX_ENQUEUE_FAILURES });

		// Parked is not retried: the sweep skips it and a redelivery is answered as stored, not 503.
		const attempted: string[] = [];
		await sweepWebhookDeliveries(
			refusingQueue((deliveryId) => {
				attempted.push(deliveryId);
				return false;
			}),
			now + 365 * 86_400_000,
		);
		expect(attempted).not.toContain(id);
		expect(await (await deliverGithub(endpoint.id, "{}", "stuck-1")).json()).toEqual({ id, duplicate: true });

		// A replay is the way out: the queue takes it now and the consumer processes it.
		const replay = await call(`/v1/webhooks/deliveries/${id}/replay`, { method: "POST", token });
		expect(replay.status).toBe(202);
		expect((await deliveryRow(id))?.enqueueFailures).toBe(0);
		await expect.poll(async () => (await deliveryRow(id))?.status, { timeout: 15_000 }).toBe("processed");
	});

	it("never lets one tenant's unqueueable deliveries hold back 120 other tenants' deliveries", async () => {
		const db = database(env.DB);
		const now = Date.now();
		const stuckTenant = uniqueId("stuck");
		const others = Array.from({ length: 120 }, () => uniqueId("fair"));
		const tenantIds = [stuckTenant, ...others];
		for (let i = 0; i < tenantIds.length; i += 20) {
			await db
				.insert(tenants)
				.values(tenantIds.slice(i, i + 20).map((id) => ({ id, name: id, tier: "pro" as const })))
				.run();
		}
		const endpointOf = (tenantId: string) =>
			`we_${tenantId
				.replace(/[^a-z0-9]/g, "")
				.padEnd(16, "0")
				.slice(-16)}`;
		for (let i = 0; i < tenantIds.length; i += 10) {
			await db
				.insert(webhookEndpoints)
				.values(
					tenantIds.slice(i, i + 10).map((tenantId) => ({
						id: endpointOf(tenantId),
						tenantId,
						name: "e",
						source: "github" as const,
						secrets: "x",
					})),
				)
				.run();
		}
		// The stuck tenant's 150 deliveries are the oldest of all; every delivery is due.
		const row = (tenantId: string, n: number, age: number) => ({
			id: `wd_${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}`,
			tenantId,
			endpointId: endpointOf(tenantId),
			deliveryId: `d-${n}`,
			payload: btoa("{}"),
			payloadBytes: 2,
			receivedAt: now - age,
			nextEnqueueAt: now - age + 60_000,
		});
		const stuck = Array.from({ length: 150 }, (_, n) => row(stuckTenant, n, 3_600_000 - n));
		const fair = others.map((tenantId, n) => row(tenantId, n, 600_000 - n));
		const all = [...stuck, ...fair];
		// Six rows a statement: D1 binds at most 100 parameters.
		for (let i = 0; i < all.length; i += 6)
			await db
				.insert(webhookDeliveries)
				.values(all.slice(i, i + 6))
				.run();

		const stuckIds = new Set(stuck.map((r) => r.id));
		const refusing = refusingQueue((deliveryId) => stuckIds.has(deliveryId));
		// Two sweeps a minute apart reach every other tenant's delivery (100 a sweep).
		expect(SWEEP_BATCH).toBe(100);
		await sweepWebhookDeliveries(refusing, now);
		await sweepWebhookDeliveries(refusing, now + 60_000);
		const fairRows = [];
		for (let i = 0; i < others.length; i += 60) {
			fairRows.push(
				...(await db
					.select({ enqueuedAt: webhookDeliveries.enqueuedAt })
					.from(webhookDeliveries)
					.where(inArray(webhookDeliveries.tenantId, others.slice(i, i + 60)))
					.all()),
			);
		}
		expect(fairRows).toHaveLength(120);
		expect(fairRows.filter((r) => r.enqueuedAt === null)).toEqual([]);
		// The stuck tenant's rows were tried (with the room left over), counted and backed off.
		const stuckRows = await db
			.select()
			.from(webhookDeliveries)
			.where(eq(webhookDeliveries.tenantId, stuckTenant))
			.all();
		const tried = stuckRows.filter((r) => r.enqueueFailures > 0);
		expect(tried.length).toBeGreaterThan(0);
		for (const r of tried) expect(r.nextEnqueueAt).toBeGreaterThanOrEqual(now + enqueueBackoffMs(r.enqueueFailures));
		expect(stuckRows.every((r) => r.status === "received" && r.enqueuedAt === null)).toBe(true);
	});
});
