/** Webhook test helpers inside workerd: a tenant with a webhooks:manage token, endpoints, signed GitHub and Stripe deliveries. */
import { env } from "cloudflare:workers";
import { sign as githubSign } from "@octokit/webhooks-methods";
import { eq } from "drizzle-orm";
import { expect } from "vitest";
import type { Limits, TierName } from "../../src/config";
import { database, webhookDeliveries } from "../../src/db";
import { call, json } from "./gateway";
import { seedCaller } from "./identity";

/** The GitHub signing secret the helpers sign with. */
export const SECRET = "gh-secret-0123456789";

export { json } from "./gateway";

/** A fresh tenant and a token for its webhooks API. */
export function tenantWithToken(tier: TierName = "pro", limits?: Limits) {
	return seedCaller(["webhooks:manage"], { tier, ...(limits ? { limits } : {}) });
}

/** A fresh tenant and a token for its webhooks API (see {@link tenantWithToken}), with one GitHub endpoint signed with {@link SECRET}. */
export async function tenantWithGithubEndpoint(tier: TierName = "pro", limits?: Limits) {
	const tenant = await tenantWithToken(tier, limits);
	const endpoint = await createEndpoint(tenant.token, { name: "gh", source: "github", secrets: [SECRET] });
	return { ...tenant, endpoint };
}

export interface CreatedEndpoint {
	id: string;
	ingestPath: string;
	destinationSecret?: string;
	activeSecrets: number;
}

/** Registers an endpoint through the API and expects 201. */
export async function createEndpoint(token: string, body: Record<string, unknown>): Promise<CreatedEndpoint> {
	const res = await call("/v1/webhooks/endpoints", { ...json("POST", body), token });
	expect(res.status).toBe(201);
	return (await res.json()) as CreatedEndpoint;
}

/** A `push` delivery signed as GitHub signs it (`@octokit/webhooks-methods`). */
export async function deliverGithub(
	endpointId: string,
	payload: string,
	deliveryId: string,
	secret = SECRET,
	eventType = "push",
) {
	return call(`/webhooks/${endpointId}`, {
		method: "POST",
		headers: {
			"content-type": "application/json",
			"x-github-event": eventType,
			"x-github-delivery": deliveryId,
			"x-hub-signature-256": await githubSign(secret, payload),
		},
		body: payload,
	});
}

/** Hex HMAC-SHA256 of `data` under `secret`, as GitHub, Stripe and Slack sign. */
export async function hmacSha256Hex(secret: string, data: string | Uint8Array): Promise<string> {
	const key = await crypto.subtle.importKey(
		"raw",
		new TextEncoder().encode(secret),
		{ name: "HMAC", hash: "SHA-256" },
		false,
		["sign"],
	);
	const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
	const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, bytes));
	return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A delivery signed as Stripe signs it: `t=<unix>,v1=HMAC-SHA256(secret, "{t}.{body}")`. */
export async function deliverStripe(endpointId: string, secret: string, body: string) {
	const t = String(Math.floor(Date.now() / 1000));
	return call(`/webhooks/${endpointId}`, {
		method: "POST",
		headers: {
			"content-type": "application/json",
			"stripe-signature": `t=${t},v1=${await hmacSha256Hex(secret, `${t}.${body}`)}`,
		},
		body,
	});
}

/** The stored delivery row. */
/**
 * Stores a delivery row of `endpoint` as the ingest writes it (a `push` whose body is `{}`), with nothing
 * after it; `fields` override. Returns the row's id.
 */
export async function seedStoredDelivery(
	endpoint: { tenantId: string; id: string },
	fields: Partial<typeof webhookDeliveries.$inferInsert> = {},
): Promise<string> {
	const id = `wd_${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}`;
	await database(env.DB)
		.insert(webhookDeliveries)
		.values({
			id,
			tenantId: endpoint.tenantId,
			endpointId: endpoint.id,
			deliveryId: `stored-${id}`,
			eventType: "push",
			payload: btoa("{}"),
			payloadBytes: 2,
			...fields,
		})
		.run();
	return id;
}

/** Every stored delivery of an endpoint. */
export const endpointRows = (endpointId: string) =>
	database(env.DB).select().from(webhookDeliveries).where(eq(webhookDeliveries.endpointId, endpointId)).all();

export const deliveryRow = (id: string) =>
	database(env.DB).select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)).get();
