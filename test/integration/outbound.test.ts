/**
 * The outbound-URL guard where tenants give URLs: webhook destinations are refused on create and update,
 * and refused again at forward time, redirects included, with ALLOW_PRIVATE_OUTBOUND off as in
 * staging and production. The test bindings turn it on, so these tests call the Worker and the
 * forwarder with a copy of the env that turns it off.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { sign as githubSign } from "@octokit/webhooks-methods";
import { eq } from "drizzle-orm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { breakerClientFor } from "../../src/breaker";
import { database, webhookDeliveries } from "../../src/db";
import type { EventEnvelope } from "../../src/events";
import { forwarder } from "../../src/webhooks";
import worker from "../../workers/gateway";
import { BASE, expectProblem } from "../helpers/gateway";
import { seedCaller } from "../helpers/identity";

const SECRET = "gh-secret-0123456789";
/** The deployed environments' setting. */
const strictEnv: Env = { ...env, ALLOW_PRIVATE_OUTBOUND: "false" };

afterEach(() => vi.restoreAllMocks());

/** The Worker's fetch with the given env, as Cloudflare calls it. */
async function callWith(
	bindings: Env,
	path: string,
	init: RequestInit & { token?: string; json?: unknown } = {},
): Promise<Response> {
	const headers = new Headers(init.headers);
	if (init.token) headers.set("authorization", `Bearer ${init.token}`);
	if (init.json !== undefined) headers.set("content-type", "application/json");
	const body = init.json !== undefined ? JSON.stringify(init.json) : init.body;
	const ctx = createExecutionContext();
	const request = new Request(`${BASE}${path}`, { ...init, headers, body }) as Request<
		unknown,
		IncomingRequestCfProperties
	>;
	const res = await worker.fetch(request, bindings, ctx);
	await waitOnExecutionContext(ctx);
	return res;
}

async function manager() {
	return (await seedCaller(["webhooks:manage"], { tier: "pro" })).token;
}

const endpointBody = (url: string) => ({ name: "gh", source: "github", secrets: [SECRET], destination: { url } });

describe("webhook destinations on create and update", () => {
	it.each([
		["http://127.0.0.1:9/in", "points at a loopback address"],
		["http://2130706433/in", "points at a loopback address"],
		["http://[::ffff:7f00:1]/in", "points at a loopback address (IPv4-mapped)"],
		["http://169.254.169.254/latest/meta-data/", "points at a link-local or cloud metadata address"],
		["http://metadata.google.internal/", "points at metadata.google.internal, an internal host name"],
		["http://10.0.0.7/in", "points at a private address"],
	])("refuses %s with a 400 problem naming the reason", async (url, reason) => {
		const token = await manager();
		const res = await callWith(strictEnv, "/v1/webhooks/endpoints", {
			method: "POST",
			token,
			json: endpointBody(url),
		});
		const problem = await expectProblem(res, 400, "validation-failed");
		expect(problem.errors).toEqual([{ path: "json.destination.url", message: reason }]);
	});

	it("refuses a private destination given by PATCH, and keeps the endpoint as it was", async () => {
		const token = await manager();
		const created = await callWith(strictEnv, "/v1/webhooks/endpoints", {
			method: "POST",
			token,
			json: endpointBody("https://hooks.example.com/in"),
		});
		expect(created.status).toBe(201);
		const { id } = (await created.json()) as { id: string };
		const patched = await callWith(strictEnv, `/v1/webhooks/endpoints/${id}`, {
			method: "PATCH",
			token,
			json: { destination: { url: "http://[::1]:8080/in" } },
		});
		await expectProblem(patched, 400, "validation-failed");
		const read = (await (await callWith(strictEnv, `/v1/webhooks/endpoints/${id}`, { token })).json()) as {
			destination: { url: string };
		};
		expect(read.destination).toEqual({ url: "https://hooks.example.com/in" });
	});

	it("accepts the same private destination where ALLOW_PRIVATE_OUTBOUND is on (local development, tests)", async () => {
		const token = await manager();
		const res = await callWith(env, "/v1/webhooks/endpoints", {
			method: "POST",
			token,
			json: endpointBody("http://127.0.0.1:9/in"),
		});
		expect(res.status).toBe(201);
	});
});

describe("forwarding", () => {
	const forward = forwarder({ breakers: breakerClientFor });

	/**
	 * An endpoint with this destination (saved with the guard off) and one verified delivery, whose
	 * event is captured instead of queued, so only the forwarder under test handles it.
	 */
	async function storedDelivery(destination: string): Promise<{ event: EventEnvelope; deliveryId: string }> {
		const token = await manager();
		const created = await callWith(env, "/v1/webhooks/endpoints", {
			method: "POST",
			token,
			json: endpointBody(destination),
		});
		expect(created.status).toBe(201);
		const { id } = (await created.json()) as { id: string };
		const sends = vi.spyOn(env.EVENTS, "send").mockResolvedValue(undefined as never);
		const payload = JSON.stringify({ zen: "Design for failure." });
		const res = await callWith(env, `/webhooks/${id}`, {
			method: "POST",
			headers: {
				"content-type": "application/json",
				"x-github-event": "push",
				"x-github-delivery": crypto.randomUUID(),
				"x-hub-signature-256": await githubSign(SECRET, payload),
			},
			body: payload,
		});
		expect(res.status).toBe(202);
		const { id: deliveryId } = (await res.json()) as { id: string };
		const event = sends.mock.calls.map((c) => c[0] as EventEnvelope).find((e) => e.data.deliveryId === deliveryId);
		if (!event) throw new Error("the delivery's event was not sent");
		sends.mockRestore();
		return { event, deliveryId };
	}

	const row = (id: string) =>
		database(env.DB).select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)).get();

	it("refuses and records a destination that the setting no longer allows, sending nothing", async () => {
		const { event, deliveryId } = await storedDelivery("http://127.0.0.1:9/in");
		const fetches = vi.spyOn(globalThis, "fetch");
		await forward.handle(event, strictEnv);
		expect(fetches.mock.calls.map((c) => new Request(c[0], c[1]).url)).not.toContain("http://127.0.0.1:9/in");
		expect(await row(deliveryId)).toMatchObject({
			status: "failed",
			lastError: "destination refused: the URL points at a loopback address",
		});
	});

	/**
	 * A stubbed network of test hosts that keeps fetch's redirect semantics: with `redirect: "follow"`
	 * (fetch's default) the stub follows a 3xx itself, as the real fetch would.
	 */
	function network(
		answer: (url: string) => Response | undefined,
	): Array<{ url: string; method: string; body: string }> {
		const requested: Array<{ url: string; method: string; body: string }> = [];
		const original = globalThis.fetch;
		const stubbed = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
			const request = new Request(input, init);
			const res = answer(request.url);
			if (!res) return original(input, init);
			requested.push({ url: request.url, method: request.method, body: await request.text() });
			const location = res.headers.get("location");
			if (request.redirect === "follow" && location && res.status >= 300 && res.status < 400) {
				return stubbed(new URL(location, request.url), init);
			}
			return res;
		};
		vi.spyOn(globalThis, "fetch").mockImplementation(stubbed);
		return requested;
	}

	it("does not follow a redirect from an allowed destination to 127.0.0.1", async () => {
		const { event, deliveryId } = await storedDelivery("https://hooks.allowed.test/in");
		const requested = network((url) => {
			if (url.startsWith("https://hooks.allowed.test/")) {
				return new Response(null, { status: 307, headers: { location: "http://127.0.0.1:9/internal" } });
			}
			if (new URL(url).hostname === "127.0.0.1") return new Response("reached the inside");
			return undefined;
		});
		const records = vi.spyOn(breakerClientFor(strictEnv), "record");
		// Refused like a refused destination: recorded as failed, not retried (no throw), and not a
		// failure of the destination in its circuit breaker.
		await forward.handle(event, strictEnv);
		expect(requested.map((r) => r.url)).toEqual(["https://hooks.allowed.test/in"]);
		expect(await row(deliveryId)).toMatchObject({
			status: "failed",
			attempts: 1,
			lastError: "destination refused: a redirect (307) target points at a loopback address",
		});
		expect(records).not.toHaveBeenCalled();
	});

	it("answers a 302 as the destination's answer: a non-2xx failure, the POST not sent on", async () => {
		const { event, deliveryId } = await storedDelivery("https://hooks.allowed.test/found");
		const requested = network((url) => {
			if (url === "https://hooks.allowed.test/found") {
				return new Response(null, { status: 302, headers: { location: "https://hooks.moved.test/new" } });
			}
			return url === "https://hooks.moved.test/new" ? new Response("ok") : undefined;
		});
		await expect(forward.handle(event, strictEnv)).rejects.toThrow("destination answered 302");
		expect(requested.map((r) => r.url)).toEqual(["https://hooks.allowed.test/found"]);
		expect(await row(deliveryId)).toMatchObject({ status: "failed", lastError: "destination answered 302" });
	});

	it("follows a redirect to another allowed destination and delivers there", async () => {
		const { event, deliveryId } = await storedDelivery("https://hooks.allowed.test/old");
		const requested = network((url) => {
			if (url === "https://hooks.allowed.test/old") {
				return new Response(null, { status: 308, headers: { location: "https://hooks.moved.test/new" } });
			}
			return url === "https://hooks.moved.test/new" ? new Response("ok") : undefined;
		});
		await forward.handle(event, strictEnv);
		const body = JSON.stringify({ zen: "Design for failure." });
		expect(requested).toEqual([
			{ url: "https://hooks.allowed.test/old", method: "POST", body },
			{ url: "https://hooks.moved.test/new", method: "POST", body },
		]);
		expect(await row(deliveryId)).toMatchObject({ status: "forwarded", lastError: null });
	});
});
