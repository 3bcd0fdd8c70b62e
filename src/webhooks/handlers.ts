/** Webhook API handlers: endpoints and deliveries, always scoped to the caller's tenant. */
import type { createRoute, RouteHandler } from "@hono/zod-openapi";
import { and, desc, eq, lt, or } from "drizzle-orm";
import type { Context } from "hono";
import { type AuditEntry, commitWithAudit } from "../audit";
import { config } from "../config";
import {
	database,
	newId,
	type WebhookDelivery,
	type WebhookEndpoint,
	webhookDeliveries,
	webhookEndpoints,
} from "../db";
import { ApiError, type AppEnv, checkOutboundUrl, formatTraceparent } from "../http";
import { sha256Hex } from "../lib";
import { unseal } from "../storage";
import { encryptionKey, endpointCacheForget, sealSecrets } from "./endpoints";
import { deliveryEventId, publishDelivery, SWEEP_AFTER_MS } from "./enqueue";
import type * as routes from "./routes";
import {
	generateStandardWebhookSecret,
	isValidWebhookSecret,
	SourceConfigSchema,
	type WebhookSource,
} from "./signatures";

type H<R extends Parameters<typeof createRoute>[0]> = RouteHandler<R, AppEnv>;

function endpointBody(e: WebhookEndpoint, activeSecrets: number) {
	return {
		id: e.id,
		tenantId: e.tenantId,
		name: e.name,
		source: e.source,
		config: SourceConfigSchema.parse(e.config ?? {}),
		activeSecrets,
		destination: e.destinationUrl ? { url: e.destinationUrl } : null,
		status: e.status,
		ingestPath: `/webhooks/${e.id}`,
		createdAt: e.createdAt,
		updatedAt: e.updatedAt,
	};
}

function deliveryBody(d: WebhookDelivery) {
	return {
		id: d.id,
		endpointId: d.endpointId,
		deliveryId: d.deliveryId,
		eventType: d.eventType,
		status: d.status,
		attempts: d.attempts,
		enqueueFailures: d.enqueueFailures,
		lastError: d.lastError,
		payloadBytes: d.payloadBytes,
		payloadIn: d.payloadKey ? ("r2" as const) : ("d1" as const),
		contentType: d.contentType,
		receivedAt: d.receivedAt,
		updatedAt: d.updatedAt,
	};
}

function auditOf(c: Context<AppEnv>, action: string, target: string, metadata?: Record<string, unknown>): AuditEntry {
	return {
		tenantId: c.var.principal.tenantId,
		actor: c.var.principal.actor,
		action,
		target,
		requestId: c.var.requestId,
		metadata: metadata ?? null,
	};
}

/** The caller's endpoint, or 404 (another tenant's endpoint is indistinguishable from none). */
async function ownEndpoint(c: Context<AppEnv>, id: string): Promise<WebhookEndpoint> {
	const row = await database(c.env.DB)
		.select()
		.from(webhookEndpoints)
		.where(and(eq(webhookEndpoints.id, id), eq(webhookEndpoints.tenantId, c.var.principal.tenantId)))
		.get();
	if (!row) throw new ApiError("not-found", "No such webhook endpoint.");
	return row;
}

/** How many secrets are active: read from the sealed value, which itself never leaves. */
async function activeSecrets(env: Env, e: WebhookEndpoint): Promise<number> {
	return (JSON.parse(await unseal(encryptionKey(env), e.tenantId, e.secrets)) as string[]).length;
}

/** 400 unless every secret suits the source (e.g. Standard Webhooks wants `whsec_` or `whpk_`). */
function assertSecrets(source: WebhookSource, secrets: string[]): void {
	const bad = secrets.flatMap((s, i) => (isValidWebhookSecret(source, s) ? [] : [i]));
	if (bad.length > 0) {
		throw new ApiError("validation-failed", `Secrets not usable for ${source} webhooks.`, {
			errors: bad.map((i) => ({ path: `json.secrets.${i}`, message: `not a valid ${source} secret` })),
		});
	}
}

/** 400 unless the gateway may send to the destination: no loopback, private or internal target in production. */
function assertDestination(env: Env, url: string): void {
	const check = checkOutboundUrl(url, { allowPrivate: config(env).ALLOW_PRIVATE_OUTBOUND });
	if (!check.ok) {
		throw new ApiError("validation-failed", `The destination URL ${check.message}.`, {
			errors: [{ path: "json.destination.url", message: check.message }],
		});
	}
}

export const createEndpoint: H<typeof routes.createEndpoint> = async (c) => {
	const body = c.req.valid("json");
	assertSecrets(body.source, body.secrets);
	if (body.destination) assertDestination(c.env, body.destination.url);
	const tenantId = c.var.principal.tenantId;
	const id = newId("we", 16);
	const destinationSecret = body.destination ? generateStandardWebhookSecret() : undefined;
	const values = {
		id,
		tenantId,
		name: body.name,
		source: body.source,
		secrets: await sealSecrets(c.env, tenantId, body.secrets),
		config: body.config ?? {},
		destinationUrl: body.destination?.url ?? null,
		destinationSecret: destinationSecret ? await sealSecrets(c.env, tenantId, [destinationSecret]) : null,
	};
	// The endpoint and its audit record commit together or not at all.
	const [[row]] = await commitWithAudit(
		c.env.DB,
		auditOf(c, "webhook_endpoint.create", `webhook_endpoint:${id}`, {
			source: body.source,
			destination: body.destination ? new URL(body.destination.url).origin : null,
		}),
		(db) => [db.insert(webhookEndpoints).values(values).returning()],
	);
	if (!row) throw new Error("endpoint insert returned no row");
	return c.json(
		{ ...endpointBody(row, body.secrets.length), ...(destinationSecret ? { destinationSecret } : {}) },
		201,
	);
};

export const listEndpoints: H<typeof routes.listEndpoints> = async (c) => {
	const rows = await database(c.env.DB)
		.select()
		.from(webhookEndpoints)
		.where(eq(webhookEndpoints.tenantId, c.var.principal.tenantId))
		.orderBy(desc(webhookEndpoints.createdAt))
		.limit(1000)
		.all();
	const endpoints = await Promise.all(rows.map(async (r) => endpointBody(r, await activeSecrets(c.env, r))));
	return c.json({ endpoints }, 200);
};

export const getEndpoint: H<typeof routes.getEndpoint> = async (c) => {
	const row = await ownEndpoint(c, c.req.valid("param").endpointId);
	return c.json(endpointBody(row, await activeSecrets(c.env, row)), 200);
};

export const updateEndpoint: H<typeof routes.updateEndpoint> = async (c) => {
	const { endpointId } = c.req.valid("param");
	const body = c.req.valid("json");
	const before = await ownEndpoint(c, endpointId);
	if (body.secrets) assertSecrets(before.source, body.secrets);
	if (body.destination) assertDestination(c.env, body.destination.url);
	const tenantId = c.var.principal.tenantId;
	const changes: Partial<typeof webhookEndpoints.$inferInsert> = { updatedAt: Date.now() };
	if (body.name !== undefined) changes.name = body.name;
	if (body.status !== undefined) changes.status = body.status;
	if (body.config !== undefined) changes.config = body.config;
	if (body.secrets !== undefined) changes.secrets = await sealSecrets(c.env, tenantId, body.secrets);
	let destinationSecret: string | undefined;
	if (body.destination !== undefined) {
		changes.destinationUrl = body.destination?.url ?? null;
		if (body.destination && !before.destinationSecret) {
			destinationSecret = generateStandardWebhookSecret();
			changes.destinationSecret = await sealSecrets(c.env, tenantId, [destinationSecret]);
		}
	}
	const action =
		body.status && body.status !== before.status
			? `webhook_endpoint.${body.status === "disabled" ? "disable" : "enable"}`
			: body.secrets
				? "webhook_endpoint.rotate_secrets"
				: "webhook_endpoint.update";
	const [[row]] = await commitWithAudit(
		c.env.DB,
		auditOf(c, action, `webhook_endpoint:${endpointId}`, {
			fields: Object.keys(body),
			...(body.secrets ? { activeSecrets: body.secrets.length } : {}),
		}),
		(db) => [
			db
				.update(webhookEndpoints)
				.set(changes)
				.where(and(eq(webhookEndpoints.id, endpointId), eq(webhookEndpoints.tenantId, tenantId)))
				.returning(),
		],
	);
	if (!row) throw new ApiError("not-found", "No such webhook endpoint.");
	endpointCacheForget(endpointId);
	return c.json(
		{ ...endpointBody(row, await activeSecrets(c.env, row)), ...(destinationSecret ? { destinationSecret } : {}) },
		200,
	);
};

export const listDeliveries: H<typeof routes.listDeliveries> = async (c) => {
	const q = c.req.valid("query");
	const filters = [eq(webhookDeliveries.tenantId, c.var.principal.tenantId)];
	if (q.endpointId) filters.push(eq(webhookDeliveries.endpointId, q.endpointId));
	if (q.status) filters.push(eq(webhookDeliveries.status, q.status));
	if (q.cursor) {
		const [at, id] = [Number(q.cursor.slice(0, q.cursor.indexOf("_"))), q.cursor.slice(q.cursor.indexOf("_") + 1)];
		const older = or(
			lt(webhookDeliveries.receivedAt, at),
			and(eq(webhookDeliveries.receivedAt, at), lt(webhookDeliveries.id, id)),
		);
		if (older) filters.push(older);
	}
	const rows = await database(c.env.DB)
		.select()
		.from(webhookDeliveries)
		.where(and(...filters))
		.orderBy(desc(webhookDeliveries.receivedAt), desc(webhookDeliveries.id))
		.limit(q.limit + 1)
		.all();
	const page = rows.slice(0, q.limit);
	const last = page.at(-1);
	return c.json(
		{
			deliveries: page.map(deliveryBody),
			nextCursor: rows.length > q.limit && last ? `${last.receivedAt}_${last.id}` : null,
		},
		200,
	);
};

async function ownDelivery(c: Context<AppEnv>, id: string): Promise<WebhookDelivery> {
	const row = await database(c.env.DB)
		.select()
		.from(webhookDeliveries)
		.where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.tenantId, c.var.principal.tenantId)))
		.get();
	if (!row) throw new ApiError("not-found", "No such delivery.");
	return row;
}

export const getDelivery: H<typeof routes.getDelivery> = async (c) => {
	return c.json(deliveryBody(await ownDelivery(c, c.req.valid("param").deliveryId)), 200);
};

export const replayDelivery: H<typeof routes.replayDelivery> = async (c) => {
	const delivery = await ownDelivery(c, c.req.valid("param").deliveryId);
	const endpoint = await ownEndpoint(c, delivery.endpointId);
	const key = c.req.valid("header")["idempotency-key"];
	// A replay is a deliberate second run with its own event id, so handlers do their work again. The
	// same Idempotency-Key gives the same event id, so a retried call has its effect once. A delivery
	// whose event no consumer has handled (parked, or never queued) is replayed under its original event
	// id: the sweep may send that one too, and the consumer runs it once.
	const eventId =
		delivery.enqueuedAt === null
			? deliveryEventId(delivery.id)
			: key
				? `ev_${delivery.id}_k${sha256Hex(`${delivery.id}:${key}`).slice(0, 24)}`
				: deliveryEventId(delivery.id, Date.now());
	// Status and audit record first, atomically; then the event (a queue refusal is a 503 to retry).
	// A parked delivery starts over: its refusals are forgotten and the sweep leaves it to this call for
	// a while (after which, if no consumer has seen it, the sweep sends its original event).
	const now = Date.now();
	await commitWithAudit(
		c.env.DB,
		auditOf(c, "webhook_delivery.replay", `webhook_delivery:${delivery.id}`, {
			eventId,
			...(delivery.status === "parked" ? { unparked: true } : {}),
		}),
		(db) => [
			db
				.update(webhookDeliveries)
				.set({
					status: "received",
					lastError: null,
					enqueueFailures: 0,
					nextEnqueueAt: now + SWEEP_AFTER_MS,
					updatedAt: now,
				})
				.where(and(eq(webhookDeliveries.id, delivery.id), eq(webhookDeliveries.tenantId, delivery.tenantId))),
		],
	);
	try {
		await publishDelivery(
			c.env,
			{ ...delivery, forward: endpoint.destinationUrl !== null },
			{ eventId, traceparent: formatTraceparent(c.var.trace), replay: true },
		);
	} catch {
		throw new ApiError("dependency-unavailable", "The replay could not be queued; retry.");
	}
	return c.json({ id: delivery.id, eventId }, 202);
};
