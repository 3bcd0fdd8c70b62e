/**
 * `POST /webhooks/{endpointId}`: the public door for deliveries. Verify the signature on the raw
 * bytes, bound what the sender gave, admit it (the endpoint's and the tenant's buckets), store the
 * delivery (D1, the body in R2 above a threshold) and put its event on the queue — only then answer
 * 2xx. A repeated delivery id answers 200 with the original delivery's id.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, eq, type Placeholder, sql } from "drizzle-orm";
import type { Context, MiddlewareHandler } from "hono";
import { failureRecorderFor } from "../auth";
import { tierPolicy } from "../config";
import { database, webhookDeliveries } from "../db";
import {
	ApiError,
	createRouter,
	type FieldError,
	formatTraceparent,
	limitBody,
	log,
	problems,
	type RequestContextVariables,
	waitUntil,
} from "../http";
import { perIsolate, randomHex, sha256Hex, toBase64 } from "../lib";
import { leaseClientFor, takeAdmission, webhookSubjects } from "../ratelimit";
import { type EndpointView, endpointView } from "./endpoints";
import { type DeliveryRef, publishDelivery, recordEnqueueFailures, SWEEP_AFTER_MS } from "./enqueue";
import { type VerifySuccess, verifyWebhook } from "./signatures";

/** Bodies up to this size are kept in the D1 row; larger ones go to R2. */
export const INLINE_PAYLOAD_MAX_BYTES = 16 * 1024;

/** Signature failures: one audit record per tenant per window, with counts per endpoint. */
const SIGNATURE_FAILURES = { action: "webhook.signature_failed", subjectsKey: "endpoints" };

type IngestEnv = { Bindings: Env; Variables: RequestContextVariables & { endpoint: EndpointView } };

/** Longest sender delivery id stored (printable ASCII); a longer one is refused with 400 before anything is stored. */
export const MAX_DELIVERY_ID_CHARS = 256;
/** Longest event type stored (printable ASCII). */
export const MAX_EVENT_TYPE_CHARS = 128;
/** Longest `content-type` stored and forwarded (printable ASCII). */
export const MAX_CONTENT_TYPE_CHARS = 256;

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * The values taken from the sender that are stored and queued, each within its bound; otherwise a 400
 * `validation-failed` listing what is wrong. Every queued event is then far below a queue message's size.
 */
function boundedFields(verified: VerifySuccess, contentType: string | null) {
	const errors: FieldError[] = [];
	const check = (path: string, value: string | null, max: number) => {
		if (value !== null && (value.length > max || !PRINTABLE_ASCII.test(value))) {
			errors.push({ path, message: `at most ${max} printable ASCII characters` });
		}
	};
	check("delivery.id", verified.deliveryId, MAX_DELIVERY_ID_CHARS);
	check("delivery.eventType", verified.eventType, MAX_EVENT_TYPE_CHARS);
	check("header.content-type", contentType, MAX_CONTENT_TYPE_CHARS);
	if (errors.length > 0) {
		throw new ApiError("validation-failed", "The delivery carries a value larger than Edgeway stores.", { errors });
	}
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
		...problems(400, 401, 403, 404, 410, 413, 429, 503),
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

/** Seconds a sender is asked to wait (`Retry-After`) after a 503 "stored but could not be queued". */
export const ENQUEUE_RETRY_AFTER_S = 60;

/**
 * Puts the delivery's event on the queue. A refusal is answered 503 (with Retry-After) so the sender
 * retries. It is recorded on the row (counted, backed off, parked after the last) only when `count`:
 * for a new row, and for a redelivery of a row that was due — a sender retrying faster than the
 * backoff must not park the row early, parking follows the sweep's schedule.
 */
async function enqueue(c: Context<IngestEnv>, delivery: DeliveryRef, failuresBefore: number, count: boolean) {
	try {
		await publishDelivery(c.env, delivery, { traceparent: formatTraceparent(c.var.trace) });
	} catch (err) {
		log("error", "webhook event could not be enqueued", {
			deliveryId: delivery.id,
			endpointId: delivery.endpointId,
			tenantId: delivery.tenantId,
			requestId: c.var.requestId,
			counted: count,
			error: err instanceof Error ? err.name : "unknown",
		});
		if (count) {
			try {
				await recordEnqueueFailures(c.env, [{ delivery, failuresBefore, error: err }], Date.now(), c.var.requestId);
			} catch (recordErr) {
				// The row still waits for the sweep, only without the failure counted.
				log("error", "webhook enqueue failure not recorded", {
					deliveryId: delivery.id,
					requestId: c.var.requestId,
					error: recordErr instanceof Error ? recordErr.name : "unknown",
				});
			}
		}
		throw new ApiError("dependency-unavailable", "The delivery is stored but could not be queued; retry later.", {
			headers: { "retry-after": String(ENQUEUE_RETRY_AFTER_S) },
		});
	}
}

/**
 * A duplicate re-enqueues a stored delivery whose event never went out: at once when the queue's
 * refusal was recorded, and after this long when nothing was recorded (the runtime died between the
 * insert and the send; sooner, the first request may still be sending). The event id is fixed, so a
 * copy of a live event is harmless.
 */
export const REQUEUE_AFTER_MS = 10_000;

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
		const contentType = c.req.header("content-type") ?? null;
		boundedFields(verified, contentType);

		// Only authentic deliveries spend the tenant's rate and quota: a forger cannot use them up.
		const tier = tierPolicy(endpoint.tier);
		const admitted = await takeAdmission(leaseClientFor(c.env), webhookSubjects({ ...endpoint, tier }), tier, {
			requestId: c.var.requestId,
			tenantId: endpoint.tenantId,
		});
		if (admitted.headers) {
			c.header("ratelimit-policy", admitted.headers["ratelimit-policy"]);
			c.header("ratelimit", admitted.headers.ratelimit);
		}
		// The tokens pay for a delivery stored and queued: a duplicate, or an answer of 5xx (the sender
		// retries), hands them back, so retrying through an outage does not spend the quota.
		const refund = () => {
			for (const t of admitted.taken) t.refund();
		};
		try {
			const { stored, response } = await store(c, verified, body, contentType);
			if (!stored) refund();
			return response;
		} catch (err) {
			if (!(err instanceof ApiError) || err.status >= 500) refund();
			throw err;
		}
	});
	return router;
}

/** A placeholder for each value the ingest stores (the other columns take their defaults). */
const placeholders = <K extends string>(...names: K[]) =>
	Object.fromEntries(names.map((name) => [name, sql.placeholder(name)])) as Record<K, Placeholder<K>>;

/**
 * The delivery's insert (a repeated endpoint + delivery id inserts nothing and returns no row), built and
 * prepared once per D1 binding per isolate, the same SQL as before: building it for every delivery was
 * ~0.2 ms of workerd CPU of the ~5 ms one costs under Miniflare (profiled, bench/RESULTS.md).
 */
const insertDelivery = perIsolate((d1: D1Database) =>
	database(d1)
		.insert(webhookDeliveries)
		.values(
			placeholders(
				"id",
				"tenantId",
				"endpointId",
				"deliveryId",
				"eventType",
				"payload",
				"payloadKey",
				"payloadBytes",
				"contentType",
				"nextEnqueueAt",
			),
		)
		.onConflictDoNothing({ target: [webhookDeliveries.endpointId, webhookDeliveries.deliveryId] })
		.returning({ id: webhookDeliveries.id })
		.prepare(),
);

/** Stores the delivery and queues its event; `stored` is false for a duplicate. */
async function store(c: Context<IngestEnv>, verified: VerifySuccess, body: Uint8Array, contentType: string | null) {
	const endpoint = c.var.endpoint;

	const db = database(c.env.DB);
	const sourceId = verified.deliveryId ?? `sha256:${sha256Hex(body)}`;
	const rowId = `wd_${randomHex(10)}`;
	const ref = (id: string, eventType: string | null): DeliveryRef => ({
		id,
		tenantId: endpoint.tenantId,
		endpointId: endpoint.id,
		eventType,
		deliveryId: sourceId,
		forward: endpoint.destinationUrl !== null,
	});
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
	const inserted = await insertDelivery(c.env.DB).get({
		id: rowId,
		tenantId: endpoint.tenantId,
		endpointId: endpoint.id,
		deliveryId: sourceId,
		eventType: verified.eventType,
		payload,
		payloadKey,
		payloadBytes: body.byteLength,
		contentType,
		nextEnqueueAt: Date.now() + SWEEP_AFTER_MS,
	});

	if (!inserted) {
		if (payloadKey) waitUntil(c, c.env.FILES.delete(payloadKey));
		const original = await db
			.select({
				id: webhookDeliveries.id,
				enqueuedAt: webhookDeliveries.enqueuedAt,
				receivedAt: webhookDeliveries.receivedAt,
				status: webhookDeliveries.status,
				eventType: webhookDeliveries.eventType,
				enqueueFailures: webhookDeliveries.enqueueFailures,
				nextEnqueueAt: webhookDeliveries.nextEnqueueAt,
			})
			.from(webhookDeliveries)
			.where(and(eq(webhookDeliveries.endpointId, endpoint.id), eq(webhookDeliveries.deliveryId, sourceId)))
			.get();
		if (!original) throw new ApiError("dependency-unavailable", "The delivery could not be stored; retry.");
		// Stored, but its event never went out (a refusal was recorded, or the request that stored it
		// died): enqueue it now. A parked delivery is answered as stored; only a replay moves it.
		const neverEnqueued =
			original.status === "received" &&
			original.enqueuedAt === null &&
			(original.enqueueFailures > 0 || Date.now() - original.receivedAt >= REQUEUE_AFTER_MS);
		if (neverEnqueued) {
			const due = Date.now() >= original.nextEnqueueAt;
			await enqueue(c, ref(original.id, original.eventType), original.enqueueFailures, due);
		}
		return { stored: false, response: c.json({ id: original.id, duplicate: true }, 200) };
	}

	// Nothing is written after a successful send (`enqueued_at` is the consumer's): only a refusal is recorded.
	await enqueue(c, ref(rowId, verified.eventType), 0, true);
	return { stored: true, response: c.json({ id: rowId, duplicate: false as const }, 202) };
}
