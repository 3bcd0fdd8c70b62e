/**
 * `POST /webhooks/{endpointId}`: the public door for deliveries. Verify the signature on the raw
 * bytes, store the delivery (D1, the body in R2 above a threshold) and put its event on the queue —
 * only then answer 2xx. A repeated delivery id answers 200 with the original delivery's id.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, eq } from "drizzle-orm";
import type { Context, MiddlewareHandler } from "hono";
import { failureRecorderFor, sha256Hex } from "../auth";
import { database, webhookDeliveries } from "../db";
import { newEvent, publish } from "../events";
import {
	ApiError,
	createRouter,
	formatTraceparent,
	limitBody,
	log,
	problems,
	type RequestContextVariables,
	waitUntil,
} from "../http";
import { type EndpointView, endpointView } from "./endpoints";
import { verifyWebhook } from "./signatures";

/** Bodies up to this size are kept in the D1 row; larger ones go to R2. */
export const INLINE_PAYLOAD_MAX_BYTES = 16 * 1024;

/** Signature failures: one audit record per tenant per window, with counts per endpoint. */
const SIGNATURE_FAILURES = { action: "webhook.signature_failed", subjectsKey: "endpoints" };

type IngestEnv = { Bindings: Env; Variables: RequestContextVariables & { endpoint: EndpointView } };

/** The event id of a delivery is fixed, so enqueueing it twice can never have two effects. */
export function deliveryEventId(deliveryRowId: string, replay = 0): string {
	return replay === 0 ? `ev_${deliveryRowId}` : `ev_${deliveryRowId}_r${replay}`;
}

function toBase64(bytes: Uint8Array): string {
	let bin = "";
	for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
	return btoa(bin);
}

const EndpointParams = z.object({
	endpointId: z.string().regex(/^we_[a-z0-9]{16}$/, "an endpoint id such as we_0123456789abcdef"),
});

const ingest = createRoute({
	method: "post",
	path: "/webhooks/{endpointId}",
	summary: "Receive a webhook delivery (public; verified by the endpoint's signature scheme)",
	request: {
		params: EndpointParams,
		body: {
			description: "The sender's payload, verified byte for byte",
			content: { "*/*": { schema: z.string().openapi({ format: "binary" }) } },
		},
	},
	responses: {
		200: {
			description: "Already received: the original delivery (or a Slack url_verification challenge)",
			content: {
				"application/json": {
					schema: z.object({
						id: z.string().optional(),
						duplicate: z.boolean().optional(),
						challenge: z.string().optional(),
					}),
				},
			},
		},
		202: {
			description: "Stored and queued",
			content: { "application/json": { schema: z.object({ id: z.string(), duplicate: z.literal(false) }) } },
		},
		...problems(400, 401, 403, 404, 410, 413, 503),
	},
});

/** Finds the endpoint: 404 unknown, 410 disabled, 403 suspended tenant. */
function loadEndpoint(): MiddlewareHandler<IngestEnv> {
	return async function loadEndpoint(c, next) {
		const parsed = EndpointParams.safeParse({ endpointId: c.req.param("endpointId") });
		const endpoint = parsed.success ? await endpointView(c.env, parsed.data.endpointId) : null;
		if (!endpoint) throw new ApiError("not-found", "No such webhook endpoint.");
		if (endpoint.status !== "active") throw new ApiError("gone", "This webhook endpoint is disabled.");
		if (endpoint.tenantStatus !== "active") throw new ApiError("tenant-suspended", "This tenant is suspended.");
		c.set("endpoint", endpoint);
		await next();
	};
}

/** Puts the delivery's event on the queue; a refusal is a 503 so the sender retries (the row waits for the sweep). */
async function enqueue(
	c: Context<IngestEnv>,
	endpoint: EndpointView,
	rowId: string,
	eventType: string | null,
	sourceId: string,
) {
	try {
		await publishDelivery(c, endpoint, rowId, eventType, sourceId);
	} catch (err) {
		log("error", "webhook event could not be enqueued", {
			deliveryId: rowId,
			endpointId: endpoint.id,
			tenantId: endpoint.tenantId,
			requestId: c.var.requestId,
			error: err instanceof Error ? err.name : "unknown",
		});
		throw new ApiError("dependency-unavailable", "The delivery is stored but could not be queued; retry later.");
	}
}

function publishDelivery(
	c: Context<IngestEnv>,
	endpoint: EndpointView,
	rowId: string,
	eventType: string | null,
	sourceId: string,
) {
	return publish(
		c.env,
		newEvent({
			id: deliveryEventId(rowId),
			type: "webhook.received",
			tenantId: endpoint.tenantId,
			source: `webhooks/${endpoint.id}`,
			traceparent: formatTraceparent(c.var.trace),
			data: {
				deliveryId: rowId,
				endpointId: endpoint.id,
				eventType,
				sourceDeliveryId: sourceId,
				forward: endpoint.destinationUrl !== null,
			},
		}),
	);
}

/**
 * A duplicate re-enqueues a stored delivery that no consumer has handled after this long (its first
 * request may have failed to enqueue it). The event id is fixed, so a copy of a live event is harmless.
 */
const REQUEUE_AFTER_MS = 10_000;

export function ingestRoutes() {
	const router = createRouter<IngestEnv>();
	router.use(
		"/webhooks/:endpointId",
		loadEndpoint(),
		limitBody((c) => (c.var as IngestEnv["Variables"]).endpoint.maxBodyBytes),
	);
	router.openapi(ingest, async (c) => {
		const endpoint = c.var.endpoint;
		const body = new Uint8Array(await c.req.arrayBuffer());
		const verified = await verifyWebhook({
			source: endpoint.source,
			config: endpoint.config,
			secrets: endpoint.secrets,
			headers: c.req.raw.headers,
			body,
			now: Date.now(),
		});
		if (!verified.ok) {
			log("warn", "webhook signature refused", {
				endpointId: endpoint.id,
				tenantId: endpoint.tenantId,
				reason: verified.reason,
				requestId: c.var.requestId,
			});
			waitUntil(
				c,
				failureRecorderFor(c.env, SIGNATURE_FAILURES).record(verified.reason, endpoint.tenantId, endpoint.id),
			);
			throw new ApiError(
				"invalid-signature",
				verified.reason === "stale-timestamp"
					? "The signature's timestamp is outside the tolerance."
					: "The signature does not verify.",
				{ reason: verified.reason },
			);
		}
		if (verified.challenge !== undefined) return c.json({ challenge: verified.challenge }, 200);

		const db = database(c.env.DB);
		const sourceId = verified.deliveryId ?? `sha256:${sha256Hex(body)}`;
		const rowId = `wd_${crypto.randomUUID().replace(/-/g, "").slice(0, 20)}`;
		const contentType = c.req.header("content-type") ?? null;
		let payload: string | null = null;
		let payloadKey: string | null = null;
		if (body.byteLength > INLINE_PAYLOAD_MAX_BYTES) {
			// Keyed by this attempt's row id: a duplicate (whose id is only a header for some sources)
			// can never overwrite the original's bytes; a losing duplicate's object is deleted below.
			payloadKey = `webhooks/${endpoint.tenantId}/${endpoint.id}/${rowId}`;
			await c.env.FILES.put(payloadKey, body, contentType ? { httpMetadata: { contentType } } : undefined);
		} else {
			payload = toBase64(body);
		}
		const inserted = await db
			.insert(webhookDeliveries)
			.values({
				id: rowId,
				tenantId: endpoint.tenantId,
				endpointId: endpoint.id,
				deliveryId: sourceId,
				eventType: verified.eventType,
				payload,
				payloadKey,
				payloadBytes: body.byteLength,
				contentType,
			})
			.onConflictDoNothing({ target: [webhookDeliveries.endpointId, webhookDeliveries.deliveryId] })
			.returning({ id: webhookDeliveries.id })
			.get();

		if (!inserted) {
			if (payloadKey) waitUntil(c, c.env.FILES.delete(payloadKey));
			const original = await db
				.select({
					id: webhookDeliveries.id,
					enqueuedAt: webhookDeliveries.enqueuedAt,
					receivedAt: webhookDeliveries.receivedAt,
					status: webhookDeliveries.status,
					eventType: webhookDeliveries.eventType,
				})
				.from(webhookDeliveries)
				.where(and(eq(webhookDeliveries.endpointId, endpoint.id), eq(webhookDeliveries.deliveryId, sourceId)))
				.get();
			if (!original) throw new ApiError("dependency-unavailable", "The delivery could not be stored; retry.");
			// The first attempt stored it but may have failed to enqueue (and answered 5xx): enqueue now.
			if (
				original.enqueuedAt === null &&
				original.status === "received" &&
				Date.now() - original.receivedAt > REQUEUE_AFTER_MS
			) {
				await enqueue(c, endpoint, original.id, original.eventType, sourceId);
			}
			return c.json({ id: original.id, duplicate: true }, 200);
		}

		// `enqueued_at` is set by the consumer's status updater, not here: one D1 write fewer per delivery.
		await enqueue(c, endpoint, rowId, verified.eventType, sourceId);
		return c.json({ id: rowId, duplicate: false as const }, 202);
	});
	return router;
}
