/**
 * Benchmarks only (bench/webhooks.mjs): the storage floor of a webhook acknowledgement — what any Worker must
 * do on the platform before it may answer 2xx to a signed delivery, and nothing else — against which the
 * gateway's ingest is measured in the same run.
 */
import { bytesEqual, fromHex, randomHex, toBase64 } from "../../src/lib";

/** Unauthenticated (the secret is a binding) and writing rows for any endpoint: local environments only. */
const FLOOR_ENVIRONMENTS = new Set(["development", "test"]);

const FLOOR_PATH = "/__bench/floor";
const SIGNATURE = /^sha256=([0-9a-fA-F]{64})$/;
/** As the gateway's ingest: the sweep leaves a fresh row to the request that stored it for this long. */
const SWEEP_AFTER_MS = 60_000;
const encoder = new TextEncoder();

interface FloorEnv {
	BENCH_FLOOR?: string;
	BENCH_FLOOR_SECRET?: string;
}

/**
 * With `BENCH_FLOOR=1` and `BENCH_FLOOR_SECRET` set, in ENVIRONMENT development or test only,
 * `POST /__bench/floor?tenant=<id>&endpoint=<we_…>` takes a GitHub-style delivery and does only what an
 * acknowledged delivery must: read the body; verify `x-hub-signature-256` (HMAC-SHA256 of the raw body
 * with the secret, through WebCrypto: the key imported and the MAC computed per request and compared in
 * constant time, as the gateway's GitHub verification does); insert the delivery row into D1
 * (`webhook_deliveries`, the body inline as base64, unique on endpoint + delivery id, as the gateway
 * stores it); send its `webhook.received` event to the queue (the gateway's consumer then handles it like
 * any delivery); answer 202 `{"id","duplicate":false}` (200 for a repeated delivery id, 401 for a bad
 * signature, 400 without a delivery id). No validation, admission, logging or middleware. The answer when
 * `request` is that route, else undefined. No wrangler.toml environment sets these bindings.
 */
export function benchFloor(request: Request, env: Env): Promise<Response> | undefined {
	const { BENCH_FLOOR, BENCH_FLOOR_SECRET: secret } = env as FloorEnv;
	if (BENCH_FLOOR !== "1" || !secret || !FLOOR_ENVIRONMENTS.has(env.ENVIRONMENT)) return undefined;
	if (request.method !== "POST" || !request.url.includes(FLOOR_PATH)) return undefined;
	const url = new URL(request.url);
	if (url.pathname !== FLOOR_PATH) return undefined;
	return acknowledge(request, env, secret, url);
}

async function acknowledge(request: Request, env: Env, secret: string, url: URL): Promise<Response> {
	const tenantId = url.searchParams.get("tenant") ?? "";
	const endpointId = url.searchParams.get("endpoint") ?? "";
	const body = new Uint8Array(await request.arrayBuffer());
	const hex = SIGNATURE.exec(request.headers.get("x-hub-signature-256") ?? "")?.[1];
	const signature = hex ? fromHex(hex) : null;
	const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
		"sign",
	]);
	const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, body));
	if (!signature || !bytesEqual(mac, signature)) return new Response(null, { status: 401 });
	const deliveryId = request.headers.get("x-github-delivery");
	if (!deliveryId) return new Response(null, { status: 400 });

	const id = `wd_${randomHex(10)}`;
	const inserted = await env.DB.prepare(
		`INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, delivery_id, event_type, payload, payload_bytes, content_type, next_enqueue_at)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, delivery_id) DO NOTHING RETURNING id`,
	)
		.bind(
			id,
			tenantId,
			endpointId,
			deliveryId,
			request.headers.get("x-github-event"),
			toBase64(body),
			body.byteLength,
			request.headers.get("content-type"),
			Date.now() + SWEEP_AFTER_MS,
		)
		.first<{ id: string }>();
	if (!inserted) return Response.json({ duplicate: true }, { status: 200 });
	await env.EVENTS.send(
		{
			id: `ev_${id}`,
			type: "webhook.received",
			version: 1,
			tenantId,
			time: new Date().toISOString(),
			source: `webhooks/${endpointId}`,
			data: { deliveryId: id, endpointId, eventType: request.headers.get("x-github-event"), forward: false },
		},
		{ contentType: "json" },
	);
	return Response.json({ id, duplicate: false }, { status: 202 });
}
