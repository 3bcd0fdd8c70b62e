/**
 * The webhooks plane end to end inside workerd: endpoints API, the public ingest door, durable storage
 * (D1 + R2), the real local queue and consumer, forwarding signed with Standard Webhooks, replay.
 */
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { sign as githubSign } from "@octokit/webhooks-methods";
import { and, eq } from "drizzle-orm";
import { Webhook } from "standardwebhooks";
import { afterEach, describe, expect, it, vi } from "vitest";
import { auditLog, database, processedEvents, webhookEndpoints } from "../../src/db";
import { ENQUEUE_BACKOFF_BASE_MS, sweepWebhookDeliveries } from "../../src/webhooks";
import worker from "../../workers/gateway";
import { call, expectProblem } from "../helpers/gateway";
import { hsToken } from "../helpers/identity";
import {
	createEndpoint,
	deliverGithub,
	deliveryRow,
	endpointRows,
	hmacSha256Hex,
	json,
	SECRET,
	tenantWithGithubEndpoint,
	tenantWithToken,
} from "../helpers/webhooks";

afterEach(() => vi.restoreAllMocks());

describe("webhook endpoints API", () => {
	it("registers an endpoint, never returns or stores its secrets in the clear, and audits it", async () => {
		const { tenantId, token, endpoint } = await tenantWithGithubEndpoint();
		expect(endpoint).toMatchObject({ ingestPath: `/webhooks/${endpoint.id}`, activeSecrets: 1 });
		expect(JSON.stringify(endpoint)).not.toContain(SECRET);
		const row = await database(env.DB)
			.select()
			.from(webhookEndpoints)
			.where(eq(webhookEndpoints.id, endpoint.id))
			.get();
		expect(row?.secrets).toMatch(/^v1\./);
		expect(row?.secrets).not.toContain(SECRET);
		const listed = await (await call("/v1/webhooks/endpoints", { token })).text();
		expect(listed).not.toContain(SECRET);
		expect(listed).not.toContain(row?.secrets ?? "x");
		const actions = await database(env.DB).select().from(auditLog).where(eq(auditLog.tenantId, tenantId)).all();
		expect(actions.map((a) => a.action)).toContain("webhook_endpoint.create");
	});

	it("refuses a free-tier tenant without the webhooks plane scope and validates bodies", async () => {
		const { token } = await tenantWithToken();
		const bad = await call("/v1/webhooks/endpoints", {
			...json("POST", { name: "x", source: "carrier-pigeon", secrets: [] }),
			token,
		});
		const problem = await expectProblem(bad, 400, "validation-failed");
		expect(problem.errors?.map((e) => e.path)).toEqual(expect.arrayContaining(["json.source", "json.secrets"]));
		const noScope = await hsToken({ tenantId: (await tenantWithToken()).tenantId, scopes: ["api:read"] });
		await expectProblem(await call("/v1/webhooks/endpoints", { token: noScope }), 403, "insufficient-scope");
	});
});

describe("ingest", () => {
	it("acknowledges a verified delivery only after storing and enqueueing it, and the consumer processes it", async () => {
		const { endpoint } = await tenantWithGithubEndpoint();
		const payload = JSON.stringify({ ref: "refs/heads/main", commits: [1, 2] });
		const res = await deliverGithub(endpoint.id, payload, "d-1");
		expect(res.status).toBe(202);
		const { id, duplicate } = (await res.json()) as { id: string; duplicate: boolean };
		expect(duplicate).toBe(false);
		const row = await deliveryRow(id);
		expect(row).toMatchObject({ deliveryId: "d-1", eventType: "push", payloadBytes: payload.length });
		expect(atob(row?.payload ?? "")).toBe(payload);
		// The real local queue delivers the event to the consumer, which marks the delivery processed.
		await expect.poll(async () => (await deliveryRow(id))?.status, { timeout: 15_000 }).toBe("processed");
		expect((await deliveryRow(id))?.enqueuedAt).toEqual(expect.any(Number));
	});

	it("answers a repeated delivery id with the original id and no second event, also when concurrent", async () => {
		const { endpoint } = await tenantWithGithubEndpoint();
		const payload = JSON.stringify({ action: "opened" });
		const sends = vi.spyOn(env.EVENTS, "send");
		const responses = await Promise.all(Array.from({ length: 20 }, () => deliverGithub(endpoint.id, payload, "dup-1")));
		// Exactly one event went onto the queue for the twenty attempts.
		const ownEvents = sends.mock.calls.filter(
			(call) => (call[0] as { data?: { endpointId?: string } }).data?.endpointId === endpoint.id,
		);
		expect(ownEvents).toHaveLength(1);
		const bodies = (await Promise.all(responses.map((r) => r.json()))) as Array<{ id: string; duplicate: boolean }>;
		expect(responses.filter((r) => r.status === 202)).toHaveLength(1);
		expect(responses.filter((r) => r.status === 200)).toHaveLength(19);
		expect(new Set(bodies.map((b) => b.id)).size).toBe(1);
		const rows = await endpointRows(endpoint.id);
		expect(rows).toHaveLength(1);
		const id = rows[0]?.id ?? "";
		await expect.poll(async () => (await deliveryRow(id))?.status, { timeout: 15_000 }).toBe("processed");
		const handled = await database(env.DB)
			.select()
			.from(processedEvents)
			.where(eq(processedEvents.eventId, `ev_${id}`))
			.all();
		expect(handled.map((h) => h.handler)).toEqual(["webhook-delivery-status"]);
		// Later duplicates still answer with the original.
		const again = await deliverGithub(endpoint.id, payload, "dup-1");
		expect(await again.json()).toEqual({ id, duplicate: true });
	});

	it("refuses bad signatures with 401, counted per endpoint in the audit log, never stored", async () => {
		const { tenantId, endpoint } = await tenantWithGithubEndpoint();
		const payload = JSON.stringify({ x: 1 });
		for (let i = 0; i < 5; i++) {
			const res = await deliverGithub(endpoint.id, payload, `bad-${i}`, "wrong-secret-0000");
			await expectProblem(res, 401, "invalid-signature");
		}
		const tampered = await call(`/webhooks/${endpoint.id}`, {
			method: "POST",
			headers: { "x-github-delivery": "t-1", "x-hub-signature-256": await githubSign(SECRET, payload) },
			body: `${payload} `,
		});
		await expectProblem(tampered, 401, "invalid-signature");
		const stored = await endpointRows(endpoint.id);
		expect(stored).toEqual([]);
		const counted = async () =>
			(
				await database(env.DB)
					.select()
					.from(auditLog)
					.where(and(eq(auditLog.tenantId, tenantId), eq(auditLog.action, "webhook.signature_failed")))
					.all()
			).reduce((n, r) => n + ((r.metadata as { endpoints: Record<string, number> }).endpoints[endpoint.id] ?? 0), 0);
		await expect.poll(counted, { timeout: 10_000 }).toBe(6);
	});

	it("accepts the second secret during a rotation", async () => {
		const { token, endpoint } = await tenantWithGithubEndpoint();
		const rotated = await call(`/v1/webhooks/endpoints/${endpoint.id}`, {
			...json("PATCH", { secrets: ["gh-new-secret-9876543210", SECRET] }),
			token,
		});
		expect(await rotated.json()).toMatchObject({ activeSecrets: 2 });
		expect((await deliverGithub(endpoint.id, "{}", "old", SECRET)).status).toBe(202);
		expect((await deliverGithub(endpoint.id, "{}", "new", "gh-new-secret-9876543210")).status).toBe(202);
	});

	it("answers 404 for an unknown endpoint, 410 for a disabled one and 413 for an oversized body", async () => {
		const { token, endpoint } = await tenantWithGithubEndpoint("free"); // 64 KiB bodies
		await expectProblem(await deliverGithub("we_0000000000000000", "{}", "x"), 404, "not-found");
		await expectProblem(await call("/webhooks/not-an-id", { method: "POST", body: "{}" }), 404, "not-found");
		const big = JSON.stringify({ blob: "x".repeat(70 * 1024) });
		await expectProblem(await deliverGithub(endpoint.id, big, "big"), 413, "payload-too-large");
		await call(`/v1/webhooks/endpoints/${endpoint.id}`, { ...json("PATCH", { status: "disabled" }), token });
		await expectProblem(await deliverGithub(endpoint.id, "{}", "late"), 410, "gone");
	});

	it("keeps a large payload in R2 and the row in D1", async () => {
		const { endpoint } = await tenantWithGithubEndpoint("enterprise");
		const payload = JSON.stringify({ blob: "y".repeat(40 * 1024) });
		const res = await deliverGithub(endpoint.id, payload, "large-1");
		expect(res.status).toBe(202);
		const { id } = (await res.json()) as { id: string };
		const row = await deliveryRow(id);
		expect(row?.payload).toBeNull();
		const object = await env.FILES.get(row?.payloadKey ?? "");
		expect(await object?.text()).toBe(payload);
	});

	it("answers Slack's url_verification challenge after verifying it", async () => {
		const { token } = await tenantWithToken();
		const secret = "slack-signing-secret-123";
		const endpoint = await createEndpoint(token, { name: "slack", source: "slack", secrets: [secret] });
		const body = JSON.stringify({
			type: "url_verification",
			challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
		});
		const ts = String(Math.floor(Date.now() / 1000));
		const signature = `v0=${await hmacSha256Hex(secret, `v0:${ts}:${body}`)}`;
		const res = await call(`/webhooks/${endpoint.id}`, {
			method: "POST",
			headers: { "content-type": "application/json", "x-slack-request-timestamp": ts, "x-slack-signature": signature },
			body,
		});
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({ challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" });
	});
});

describe("nothing acknowledged is lost", () => {
	it("answers 503 when the queue refuses, keeps the row, and the sweep enqueues it later", async () => {
		const { endpoint } = await tenantWithGithubEndpoint();
		vi.spyOn(env.EVENTS, "send").mockRejectedValueOnce(new Error("queue unavailable"));
		const res = await deliverGithub(endpoint.id, JSON.stringify({ n: 1 }), "q-down-1");
		await expectProblem(res, 503, "dependency-unavailable");
		const rows = await endpointRows(endpoint.id);
		expect(rows).toHaveLength(1);
		const id = rows[0]?.id ?? "";
		// The refusal is recorded on the row: the sweep tries again after the first backoff.
		expect(rows[0]).toMatchObject({ status: "received", enqueuedAt: null, enqueueFailures: 1 });
		// The cron sweep finds the stranded row (as if the backoff had passed) and the consumer processes it.
		const swept = await sweepWebhookDeliveries(env, Date.now() + ENQUEUE_BACKOFF_BASE_MS + 1000);
		expect(swept.requeued).toBeGreaterThanOrEqual(1);
		await expect.poll(async () => (await deliveryRow(id))?.status, { timeout: 15_000 }).toBe("processed");
	});

	it("keeps the original payload when a duplicate id arrives with different bytes", async () => {
		const { endpoint } = await tenantWithGithubEndpoint("enterprise");
		const original = JSON.stringify({ blob: "a".repeat(20 * 1024) });
		const { id } = (await (await deliverGithub(endpoint.id, original, "same-id")).json()) as { id: string };
		const other = JSON.stringify({ blob: "b".repeat(20 * 1024) });
		expect(await (await deliverGithub(endpoint.id, other, "same-id")).json()).toEqual({ id, duplicate: true });
		const row = await deliveryRow(id);
		expect(await (await env.FILES.get(row?.payloadKey ?? ""))?.text()).toBe(original);
	});
});

describe("forwarding", () => {
	it("forwards the verified payload signed with Standard Webhooks, and replays it on request", async () => {
		const { token } = await tenantWithToken();
		const received: Array<{ body: string; headers: Record<string, string> }> = [];
		const original = globalThis.fetch;
		vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
			const request = new Request(input, init);
			if (request.url.startsWith("https://hooks.destination.test/")) {
				received.push({ body: await request.text(), headers: Object.fromEntries(request.headers) });
				return new Response("ok");
			}
			return original(input, init);
		});
		const endpoint = await createEndpoint(token, {
			name: "gh",
			source: "github",
			secrets: [SECRET],
			destination: { url: "https://hooks.destination.test/in" },
		});
		expect(endpoint.destinationSecret).toMatch(/^whsec_/);
		const payload = JSON.stringify({ zen: "Keep it logically awesome." });
		const { id } = (await (await deliverGithub(endpoint.id, payload, "fwd-1")).json()) as { id: string };
		await expect.poll(async () => (await deliveryRow(id))?.status, { timeout: 15_000 }).toBe("forwarded");
		expect(received).toHaveLength(1);
		const forwarded = received[0] as { body: string; headers: Record<string, string> };
		expect(forwarded.body).toBe(payload);
		// The receiver verifies it with the official Standard Webhooks library.
		expect(new Webhook(endpoint.destinationSecret ?? "").verify(forwarded.body, forwarded.headers)).toEqual(
			JSON.parse(payload),
		);

		const sent = vi.spyOn(env.EVENTS, "send");
		const replay = () =>
			call(`/v1/webhooks/deliveries/${id}/replay`, {
				method: "POST",
				token,
				headers: { "idempotency-key": "retry-1" },
			});
		const first = await replay();
		expect(first.status).toBe(202);
		// The client retries the same replay: the same event id, so it is forwarded once.
		const second = await replay();
		const { eventId } = (await first.json()) as { eventId: string };
		expect(((await second.json()) as { eventId: string }).eventId).toBe(eventId);
		await expect.poll(() => received.length, { timeout: 15_000 }).toBe(2);
		expect(received[1]?.headers["webhook-id"]).not.toBe(forwarded.headers["webhook-id"]);
		await expect.poll(async () => (await deliveryRow(id))?.attempts, { timeout: 15_000 }).toBe(2);
		// Each replay call queued the event, under the one id. Rather than wait an arbitrary while for the
		// queue's second copy, hand that copy to the Worker's consumer now: it is acknowledged, not forwarded.
		const queued = sent.mock.calls.map(([body]) => body).filter((b) => (b as { id?: string }).id === eventId);
		expect(queued).toHaveLength(2);
		const again = createMessageBatch("edgeway-events", [
			{ id: "replay-duplicate", timestamp: new Date(), attempts: 1, body: queued[1] },
		]);
		await worker.queue(again, env);
		expect(await getQueueResult(again, createExecutionContext())).toMatchObject({ retryMessages: [] });
		expect(received).toHaveLength(2);
	});

	it("records a failing destination on the delivery and retries it", async () => {
		const { token } = await tenantWithToken();
		let calls = 0;
		const original = globalThis.fetch;
		vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
			const request = new Request(input, init);
			if (request.url.startsWith("https://flaky.destination.test/")) {
				calls++;
				return calls < 3 ? new Response("down", { status: 503 }) : new Response("ok");
			}
			return original(input, init);
		});
		const endpoint = await createEndpoint(token, {
			name: "gh",
			source: "github",
			secrets: [SECRET],
			destination: { url: "https://flaky.destination.test/in" },
		});
		const { id } = (await (await deliverGithub(endpoint.id, "{}", "flaky-1")).json()) as { id: string };
		await expect.poll(async () => (await deliveryRow(id))?.status, { timeout: 30_000 }).toBe("forwarded");
		const row = await deliveryRow(id);
		expect(row?.attempts).toBe(3);
		expect(calls).toBe(3);
	});
});

describe("tenant separation", () => {
	it("never lets tenant A see, change or replay tenant B's endpoints or deliveries", async () => {
		const a = await tenantWithToken();
		const b = await tenantWithToken();
		const endpointB = await createEndpoint(b.token, { name: "b", source: "github", secrets: [SECRET] });
		const { id: deliveryB } = (await (await deliverGithub(endpointB.id, "{}", "b-1")).json()) as { id: string };
		await expectProblem(await call(`/v1/webhooks/endpoints/${endpointB.id}`, { token: a.token }), 404, "not-found");
		await expectProblem(
			await call(`/v1/webhooks/endpoints/${endpointB.id}`, {
				...json("PATCH", { status: "disabled" }),
				token: a.token,
			}),
			404,
			"not-found",
		);
		await expectProblem(await call(`/v1/webhooks/deliveries/${deliveryB}`, { token: a.token }), 404, "not-found");
		await expectProblem(
			await call(`/v1/webhooks/deliveries/${deliveryB}/replay`, { method: "POST", token: a.token }),
			404,
			"not-found",
		);
		const listA = (await (await call("/v1/webhooks/deliveries", { token: a.token })).json()) as {
			deliveries: unknown[];
		};
		expect(listA.deliveries).toEqual([]);
		const listEndpointsA = (await (await call("/v1/webhooks/endpoints", { token: a.token })).json()) as {
			endpoints: unknown[];
		};
		expect(listEndpointsA.endpoints).toEqual([]);
		// B sees its own.
		const listB = (await (
			await call(`/v1/webhooks/deliveries?endpointId=${endpointB.id}`, { token: b.token })
		).json()) as {
			deliveries: Array<{ id: string }>;
		};
		expect(listB.deliveries.map((d) => d.id)).toEqual([deliveryB]);
	});
});
