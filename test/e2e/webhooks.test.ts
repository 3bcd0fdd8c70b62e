/**
 * Webhooks over real HTTP, signed as the real senders sign: a GitHub delivery (`@octokit/webhooks-methods`
 * `sign`) is acknowledged with 202 and then processed by the events consumer; a repeated delivery id answers
 * 200 with the original id; a bad signature is a 401 problem; Stripe (`stripe.webhooks.
 * generateTestHeaderStringAsync`) and Standard Webhooks (`standardwebhooks` `Webhook.sign`) deliveries are
 * accepted; and 30 concurrent copies of one delivery, split across two isolates, leave exactly one row.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { sign as signGithub } from "@octokit/webhooks-methods";
import { Webhook } from "standardwebhooks";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
	type Gateway,
	githubSignature,
	registerWebhookEndpoint,
	startGateway,
	type WebhookEndpointCreated,
} from "../helpers/node/gateway.ts";
import { eventually, expectProblem } from "../helpers/node/http.ts";

const TENANT = "hooks-e2e";
const GITHUB_SECRET = "github-e2e-secret-0123456789";
const STRIPE_SECRET = "whsec_stripe_e2e_0123456789abcdef";
const STANDARD_SECRET = `whsec_${randomBytes(32).toString("base64")}`;
/** Bounded wait for the queue consumer (batches flush after at most 1 s) to mark a delivery processed. */
const PROCESSED_WITHIN_MS = 20_000;
const CONCURRENT_COPIES = 30;

let gw: Gateway;
let token: string;
let github: WebhookEndpointCreated;

interface Ack {
	id: string;
	duplicate: boolean;
}

interface Delivery {
	id: string;
	endpointId: string;
	deliveryId: string;
	eventType: string | null;
	status: string;
	payloadIn: string;
}

/** A GitHub `push` body as GitHub sends it (compact JSON, non-ASCII kept as UTF-8). */
function pushBody(commitMessage: string): string {
	return JSON.stringify({
		ref: "refs/heads/main",
		before: "0".repeat(40),
		after: randomBytes(20).toString("hex"),
		repository: { id: 123456789, name: "widgets", full_name: "acme/widgets", private: true },
		pusher: { name: "dev", email: "dev@acme.example" },
		head_commit: { id: randomBytes(20).toString("hex"), message: commitMessage },
	});
}

async function deliverGithub(
	body: string,
	options: { deliveryId: string; signature: string; base?: URL },
): Promise<Response> {
	return fetch(new URL(github.ingestPath, options.base ?? gw.url), {
		method: "POST",
		headers: {
			"content-type": "application/json",
			"user-agent": "GitHub-Hookshot/e2e",
			"x-github-event": "push",
			"x-github-delivery": options.deliveryId,
			"x-hub-signature-256": options.signature,
		},
		body,
	});
}

async function getDelivery(id: string): Promise<Response> {
	return fetch(new URL(`/v1/webhooks/deliveries/${id}`, gw.url), {
		headers: { authorization: `Bearer ${token}` },
	});
}

/** Polls the delivery API (bounded) until the delivery is processed; returns it as last seen. */
async function processed(id: string): Promise<Delivery | undefined> {
	let last: Delivery | undefined;
	const done = await eventually(
		async () => {
			const res = await getDelivery(id);
			if (res.status !== 200) throw new Error(`GET delivery ${id}: HTTP ${res.status} ${await res.text()}`);
			last = (await res.json()) as Delivery;
			return last.status === "processed";
		},
		PROCESSED_WITHIN_MS,
		100,
	);
	expect(done, `delivery ${id} never reached processed: ${JSON.stringify(last)}`).toBe(true);
	return last;
}

async function rowsFor(endpointId: string, deliveryId: string): Promise<number> {
	const row = await (await gw.db())
		.prepare("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = ? AND delivery_id = ?")
		.bind(endpointId, deliveryId)
		.first<{ n: number }>();
	return Number(row?.n);
}

beforeAll(async () => {
	gw = await startGateway({ isolates: 2 });
	await gw.seedTenant({ id: TENANT, tier: "pro" });
	token = await gw.mintJwt({ tenantId: TENANT, scopes: ["webhooks:manage"], tier: "pro" });
	github = await registerWebhookEndpoint(gw.url, token, {
		name: "GitHub (e2e)",
		source: "github",
		secrets: [GITHUB_SECRET],
	});
});

afterAll(async () => {
	await gw?.dispose();
});

describe("registration", () => {
	it("registers an endpoint with scope webhooks:manage and never returns its secret", async () => {
		expect(github).toMatchObject({ tenantId: TENANT, source: "github", activeSecrets: 1, status: "active" });
		expect(github.ingestPath).toBe(`/webhooks/${github.id}`);
		expect(JSON.stringify(github)).not.toContain(GITHUB_SECRET);
	});

	it("signs GitHub bodies in the helper exactly as @octokit/webhooks-methods does", async () => {
		const body = pushBody("héllo ✓");
		expect(githubSignature(GITHUB_SECRET, body)).toBe(await signGithub(GITHUB_SECRET, body));
	});
});

describe("GitHub deliveries", () => {
	const body = pushBody("Fix the edge case — naïve quoting");
	const deliveryId = randomUUID();
	let first: Ack;

	it("acknowledges a delivery signed with @octokit/webhooks-methods with 202, then processes it", async () => {
		const res = await deliverGithub(body, { deliveryId, signature: await signGithub(GITHUB_SECRET, body) });
		expect(res.status).toBe(202);
		first = (await res.json()) as Ack;
		expect(first).toEqual({ id: expect.stringMatching(/^wd_[a-z0-9]{20}$/), duplicate: false });

		const delivery = await processed(first.id);
		expect(delivery).toMatchObject({
			id: first.id,
			endpointId: github.id,
			deliveryId,
			eventType: "push",
			payloadIn: "d1",
		});
		// The status handler's effect is recorded once for the delivery's event.
		const effects = await (await gw.db())
			.prepare("SELECT handler FROM processed_events WHERE event_id = ?")
			.bind(`ev_${first.id}`)
			.all<{ handler: string }>();
		expect(effects.results.map((r) => r.handler)).toEqual(["webhook-delivery-status"]);
	});

	it("answers a repeated delivery id with 200 and the original delivery's id", async () => {
		expect(first, "the first delivery was not acknowledged").toBeDefined();
		const res = await deliverGithub(body, { deliveryId, signature: await signGithub(GITHUB_SECRET, body) });
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({ id: first.id, duplicate: true });
		expect(await rowsFor(github.id, deliveryId)).toBe(1);
	});

	it("refuses a wrong secret and a tampered body with a 401 problem, storing nothing", async () => {
		const wrongSecret = randomUUID();
		const wrong = await deliverGithub(body, {
			deliveryId: wrongSecret,
			signature: await signGithub("not-the-endpoint-secret", body),
		});
		const problem = await expectProblem(wrong, 401, "invalid-signature");
		expect(JSON.stringify(problem)).not.toContain(GITHUB_SECRET);

		const tamperedId = randomUUID();
		const tampered = await deliverGithub(body.replace("naïve", "naive"), {
			deliveryId: tamperedId,
			signature: await signGithub(GITHUB_SECRET, body),
		});
		await expectProblem(tampered, 401, "invalid-signature");

		expect(await rowsFor(github.id, wrongSecret)).toBe(0);
		expect(await rowsFor(github.id, tamperedId)).toBe(0);
	});

	it(`stores ${CONCURRENT_COPIES} concurrent copies of one delivery across two isolates as exactly one row`, async () => {
		expect(gw.urls).toHaveLength(2);
		const copyBody = pushBody("Concurrent duplicate");
		const copyId = randomUUID();
		const signature = await signGithub(GITHUB_SECRET, copyBody);
		const answers = await Promise.all(
			Array.from({ length: CONCURRENT_COPIES }, async (_, i) => {
				const base = gw.urls[i % 2];
				const res = await deliverGithub(copyBody, { deliveryId: copyId, signature, base });
				return { isolate: i % 2, status: res.status, body: (await res.json()) as Ack };
			}),
		);
		const statuses = answers.map((a) => a.status).sort();
		expect(
			statuses.filter((s) => s === 202),
			JSON.stringify(answers),
		).toHaveLength(1);
		expect(statuses.filter((s) => s === 200)).toHaveLength(CONCURRENT_COPIES - 1);
		// Both isolates answered, and every answer names the same delivery.
		expect(new Set(answers.map((a) => a.isolate)).size).toBe(2);
		const ids = new Set(answers.map((a) => a.body.id));
		expect(ids.size).toBe(1);
		expect(answers.filter((a) => a.body.duplicate === false)).toHaveLength(1);

		expect(await rowsFor(github.id, copyId)).toBe(1);
		const [id] = [...ids] as [string];
		await processed(id);
		const effects = await (await gw.db())
			.prepare("SELECT COUNT(*) AS n FROM processed_events WHERE event_id LIKE ?")
			.bind(`ev_${id}%`)
			.first<{ n: number }>();
		expect(Number(effects?.n)).toBe(1);
	});
});

describe("other senders", () => {
	it("accepts a Stripe delivery signed by the stripe package", async () => {
		const stripe = await registerWebhookEndpoint(gw.url, token, {
			name: "Stripe (e2e)",
			source: "stripe",
			secrets: [STRIPE_SECRET],
		});
		const eventId = `evt_${randomBytes(12).toString("hex")}`;
		const payload = JSON.stringify(
			{
				id: eventId,
				object: "event",
				api_version: "2025-10-29.clover",
				created: Math.floor(Date.now() / 1000),
				type: "payment_intent.succeeded",
				data: { object: { id: "pi_e2e", object: "payment_intent", amount: 2000, currency: "eur" } },
				livemode: false,
			},
			null,
			2,
		);
		const header = await Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret: STRIPE_SECRET });
		const res = await fetch(new URL(stripe.ingestPath, gw.url), {
			method: "POST",
			headers: { "content-type": "application/json; charset=utf-8", "stripe-signature": header },
			body: payload,
		});
		expect(res.status).toBe(202);
		const ack = (await res.json()) as Ack;
		expect(ack.duplicate).toBe(false);
		expect(await processed(ack.id)).toMatchObject({
			endpointId: stripe.id,
			deliveryId: eventId,
			eventType: "payment_intent.succeeded",
		});
	});

	it("accepts a Standard Webhooks delivery signed by the standardwebhooks package", async () => {
		const standard = await registerWebhookEndpoint(gw.url, token, {
			name: "Standard Webhooks (e2e)",
			source: "standard",
			secrets: [STANDARD_SECRET],
		});
		const msgId = `msg_${randomUUID()}`;
		const sentAt = new Date();
		const payload = JSON.stringify({ type: "invoice.paid", timestamp: sentAt.toISOString(), data: { id: "inv_1" } });
		const signature = new Webhook(STANDARD_SECRET).sign(msgId, sentAt, payload);
		const res = await fetch(new URL(standard.ingestPath, gw.url), {
			method: "POST",
			headers: {
				"content-type": "application/json",
				"webhook-id": msgId,
				"webhook-timestamp": String(Math.floor(sentAt.getTime() / 1000)),
				"webhook-signature": signature,
			},
			body: payload,
		});
		expect(res.status).toBe(202);
		const ack = (await res.json()) as Ack;
		expect(await processed(ack.id)).toMatchObject({ endpointId: standard.id, deliveryId: msgId });
	});
});
