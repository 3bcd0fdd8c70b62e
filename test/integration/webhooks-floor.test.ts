/**
 * The webhook benchmark's storage floor (bench/worker/floor.ts), on the real local D1 and queue: off unless
 * switched on in a local environment; when on, it verifies the GitHub signature, stores the same row as the
 * gateway and queues an event the gateway's consumer processes like any delivery.
 */
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { sign as githubSign } from "@octokit/webhooks-methods";
import { afterEach, describe, expect, it, vi } from "vitest";
import { benchFloor } from "../../bench/worker";
import { EventEnvelopeSchema } from "../../src/events";
import worker from "../../workers/gateway";
import { deliveryRow, endpointRows, SECRET, tenantWithGithubEndpoint } from "../helpers/webhooks";

afterEach(() => vi.restoreAllMocks());

const on = { ...env, BENCH_FLOOR: "1", BENCH_FLOOR_SECRET: SECRET } as Env;

/** The floor's answer to `request` (switched on); fails the test when the floor does not take it. */
async function floor(request: Request): Promise<Response> {
	const answer = benchFloor(request, on);
	if (!answer) throw new Error(`the floor did not take ${request.method} ${request.url}`);
	return answer;
}

async function floorRequest(tenantId: string, endpointId: string, body: string, signature: string, deliveryId = "f-1") {
	return new Request(`https://gateway.test/__bench/floor?tenant=${tenantId}&endpoint=${endpointId}`, {
		method: "POST",
		headers: {
			"content-type": "application/json",
			"x-github-event": "push",
			"x-github-delivery": deliveryId,
			"x-hub-signature-256": signature,
		},
		body,
	});
}

describe("the webhook storage floor (benchmarks only)", () => {
	it("is off without BENCH_FLOOR, outside development and test, and for other routes", async () => {
		const request = await floorRequest("t", "we_x", "{}", await githubSign(SECRET, "{}"));
		expect(benchFloor(request, env)).toBeUndefined();
		expect(benchFloor(request, { ...on, ENVIRONMENT: "staging" } as Env)).toBeUndefined();
		expect(benchFloor(request, { ...on, ENVIRONMENT: "production" } as Env)).toBeUndefined();
		expect(benchFloor(request, { ...on, BENCH_FLOOR_SECRET: "" } as Env)).toBeUndefined();
		expect(benchFloor(new Request("https://gateway.test/__bench/floor"), on)).toBeUndefined();
		expect(benchFloor(new Request("https://gateway.test/webhooks/we_x", { method: "POST" }), on)).toBeUndefined();
	});

	it("refuses a bad signature with 401 and stores nothing", async () => {
		const { tenantId, endpoint } = await tenantWithGithubEndpoint();
		const send = vi.spyOn(env.EVENTS, "send");
		const bad = await floorRequest(tenantId, endpoint.id, "{}", await githubSign("another-secret-000", "{}"));
		expect((await floor(bad)).status).toBe(401);
		const malformed = await floorRequest(tenantId, endpoint.id, "{}", "sha256=zz");
		expect((await floor(malformed)).status).toBe(401);
		expect(await endpointRows(endpoint.id)).toEqual([]);
		expect(send).not.toHaveBeenCalled();
	});

	it("stores the delivery, queues a valid webhook.received event, and answers a repeat as a duplicate", async () => {
		const { tenantId, endpoint } = await tenantWithGithubEndpoint();
		const body = JSON.stringify({ ref: "refs/heads/main" });
		const send = vi.spyOn(env.EVENTS, "send");

		const res = await floor(await floorRequest(tenantId, endpoint.id, body, await githubSign(SECRET, body)));
		expect(res.status).toBe(202);
		const { id } = (await res.json()) as { id: string };
		expect(await deliveryRow(id)).toMatchObject({
			tenantId,
			endpointId: endpoint.id,
			deliveryId: "f-1",
			eventType: "push",
			payloadBytes: body.length,
			status: "received",
		});
		expect(atob((await deliveryRow(id))?.payload ?? "")).toBe(body);
		expect(send).toHaveBeenCalledTimes(1);
		const event = EventEnvelopeSchema.parse(send.mock.calls[0]?.[0]);
		expect(event).toMatchObject({ id: `ev_${id}`, type: "webhook.received", tenantId, data: { deliveryId: id } });

		// The gateway's consumer handles it like any delivery.
		const batch = createMessageBatch("edgeway-events", [
			{ id: "floor-1", timestamp: new Date(), attempts: 1, body: event },
		]);
		await worker.queue(batch, env);
		expect((await getQueueResult(batch, createExecutionContext())).explicitAcks).toEqual(["floor-1"]);
		expect((await deliveryRow(id))?.status).toBe("processed");

		const again = await floor(await floorRequest(tenantId, endpoint.id, body, await githubSign(SECRET, body)));
		expect({ status: again.status, body: await again.json() }).toEqual({ status: 200, body: { duplicate: true } });
		expect(await endpointRows(endpoint.id)).toHaveLength(1);
	});
});
