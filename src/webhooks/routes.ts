/** Webhook API route definitions: endpoints (scope webhooks:manage) and deliveries. */
import { createRoute, z } from "@hono/zod-openapi";
import { BEARER, jsonResponse, problems } from "../http";
import { SourceConfigSchema } from "./signatures";

const EndpointId = z.string().regex(/^we_[a-z0-9]{16}$/, "an endpoint id such as we_0123456789abcdef");
const DeliveryId = z.string().regex(/^wd_[a-z0-9]{20}$/, "a delivery id such as wd_…");
const Source = z.enum(["github", "stripe", "slack", "standard", "hmac"]);
const Secret = z.string().min(8).max(512);
const Destination = z.object({ url: z.url({ protocol: /^https?$/ }) }).strict();
const DeliveryStatus = z.enum(["received", "processed", "forwarded", "failed", "parked"]);

export const EndpointSchema = z
	.object({
		id: EndpointId,
		tenantId: z.string(),
		name: z.string(),
		source: Source,
		config: SourceConfigSchema,
		/** How many signing secrets are active (1, or 2 during a rotation). The secrets are never returned. */
		activeSecrets: z.number().int(),
		destination: z.object({ url: z.string() }).nullable(),
		status: z.enum(["active", "disabled"]),
		ingestPath: z.string(),
		createdAt: z.number().int(),
		updatedAt: z.number().int().nullable(),
	})
	.openapi("WebhookEndpoint");

export const DeliverySchema = z
	.object({
		id: DeliveryId,
		endpointId: EndpointId,
		deliveryId: z.string(),
		eventType: z.string().nullable(),
		status: DeliveryStatus,
		/** Forwarding attempts. */
		attempts: z.number().int(),
		/** Times the queue refused the delivery's event; at MAX_ENQUEUE_FAILURES it is parked. */
		enqueueFailures: z.number().int(),
		lastError: z.string().nullable(),
		payloadBytes: z.number().int(),
		payloadIn: z.enum(["d1", "r2"]),
		contentType: z.string().nullable(),
		receivedAt: z.number().int(),
		updatedAt: z.number().int().nullable(),
	})
	.openapi("WebhookDelivery");

const errors = problems(400, 401, 403, 404, 415, 429);

export const createEndpoint = createRoute({
	method: "post",
	path: "/endpoints",
	summary: "Register a webhook endpoint; the secret for forwarded events is shown once",
	security: BEARER,
	request: {
		body: {
			required: true,
			content: {
				"application/json": {
					schema: z
						.object({
							name: z.string().min(1).max(200),
							source: Source,
							secrets: z.array(Secret).min(1).max(2),
							config: SourceConfigSchema.optional(),
							destination: Destination.optional(),
						})
						.strict(),
				},
			},
		},
	},
	responses: {
		201: jsonResponse(EndpointSchema.extend({ destinationSecret: z.string().optional() }), "The endpoint"),
		...errors,
	},
});

export const listEndpoints = createRoute({
	method: "get",
	path: "/endpoints",
	summary: "List the tenant's webhook endpoints",
	security: BEARER,
	responses: { 200: jsonResponse(z.object({ endpoints: z.array(EndpointSchema) }), "The endpoints"), ...errors },
});

export const getEndpoint = createRoute({
	method: "get",
	path: "/endpoints/{endpointId}",
	summary: "Read a webhook endpoint",
	security: BEARER,
	request: { params: z.object({ endpointId: EndpointId }) },
	responses: { 200: jsonResponse(EndpointSchema, "The endpoint"), ...errors },
});

export const updateEndpoint = createRoute({
	method: "patch",
	path: "/endpoints/{endpointId}",
	summary: "Rename, rotate secrets (give the new and the old), change the destination, disable or enable",
	security: BEARER,
	request: {
		params: z.object({ endpointId: EndpointId }),
		body: {
			required: true,
			content: {
				"application/json": {
					schema: z
						.object({
							name: z.string().min(1).max(200).optional(),
							secrets: z.array(Secret).min(1).max(2).optional(),
							config: SourceConfigSchema.optional(),
							destination: Destination.nullable().optional(),
							status: z.enum(["active", "disabled"]).optional(),
						})
						.strict()
						.refine((v) => Object.keys(v).length > 0, "give at least one field to change"),
				},
			},
		},
	},
	responses: {
		200: jsonResponse(EndpointSchema.extend({ destinationSecret: z.string().optional() }), "The endpoint"),
		...errors,
	},
});

export const listDeliveries = createRoute({
	method: "get",
	path: "/deliveries",
	summary: "List the tenant's deliveries, newest first",
	security: BEARER,
	request: {
		query: z.object({
			endpointId: EndpointId.optional(),
			status: DeliveryStatus.optional(),
			cursor: z
				.string()
				.regex(/^\d+_wd_[a-z0-9]{20}$/, "a cursor from nextCursor")
				.optional(),
			limit: z.coerce.number().int().min(1).max(200).default(50),
		}),
	},
	responses: {
		200: jsonResponse(
			z.object({ deliveries: z.array(DeliverySchema), nextCursor: z.string().nullable() }),
			"The deliveries",
		),
		...errors,
	},
});

export const getDelivery = createRoute({
	method: "get",
	path: "/deliveries/{deliveryId}",
	summary: "Inspect a delivery: status, attempts, last error",
	security: BEARER,
	request: { params: z.object({ deliveryId: DeliveryId }) },
	responses: { 200: jsonResponse(DeliverySchema, "The delivery"), ...errors },
});

export const replayDelivery = createRoute({
	method: "post",
	path: "/deliveries/{deliveryId}/replay",
	summary:
		"Process a delivery again (forwarding it again if the endpoint has a destination); also the way out of `parked`. With an Idempotency-Key, repeating the call queues nothing new.",
	security: BEARER,
	request: {
		params: z.object({ deliveryId: DeliveryId }),
		headers: z.object({ "idempotency-key": z.string().min(1).max(200).optional() }),
	},
	responses: { 202: jsonResponse(z.object({ id: DeliveryId, eventId: z.string() }), "Queued again"), ...errors },
});
