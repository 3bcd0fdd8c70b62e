/** Incoming-webhook signatures: each source signed as its real sender signs, then tampered, re-serialised, stale and rotated. */
import { sign as signGithub } from "@octokit/webhooks-methods";
import { Webhook } from "standardwebhooks";
import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import {
	generateStandardWebhookSecret,
	isValidWebhookSecret,
	type SourceConfig,
	SourceConfigSchema,
	signStandardWebhook,
	type VerifyResult,
	verifyWebhook,
	type WebhookSource,
} from "../../src/webhooks/signatures";

const NOW = Date.UTC(2026, 10, 20, 12, 0, 0);
const NOW_S = NOW / 1000;
const encoder = new TextEncoder();

function base64(bytes: ArrayBuffer | Uint8Array): string {
	let binary = "";
	for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
	return btoa(binary);
}

function hex(bytes: ArrayBuffer): string {
	return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function hmac(hash: "SHA-256" | "SHA-512", secret: string, content: Uint8Array | string): Promise<ArrayBuffer> {
	const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash }, false, ["sign"]);
	return crypto.subtle.sign("HMAC", key, typeof content === "string" ? encoder.encode(content) : content);
}

function concat(prefix: string, body: Uint8Array): Uint8Array {
	const head = encoder.encode(prefix);
	const out = new Uint8Array(head.length + body.length);
	out.set(head);
	out.set(body, head.length);
	return out;
}

/** The body as parsed and written back by a framework: whitespace gone, `\u00e9` unescaped, the numeric key moved first. */
function reserialise(body: string): string {
	const again = JSON.stringify(JSON.parse(body));
	expect(again).not.toBe(body);
	return again;
}

interface SourceCase {
	source: WebhookSource;
	config: SourceConfig;
	/** A signing secret (a fresh one each call for sources whose secrets have a format). */
	secret: () => string;
	body: string;
	/** Signs `body` at `at` (unix seconds) the way the sender does, returning the request headers. */
	sign: (body: string, secret: string, at: number) => Promise<Headers>;
	signatureHeader: string;
	deliveryId: string | null;
	eventType: string | null;
	timestamped: boolean;
}

const GITHUB_BODY = `{
  "ref": "refs/heads/main",
  "after": "9f2c1a",
  "repository": { "full_name": "acme/caf\\u00e9", "id": 2000 },
  "42": "numeric keys sort first when re-serialised"
}`;

const STRIPE_BODY = `{
  "id": "evt_1QzXyZAbCdEf",
  "object": "event",
  "type": "payment_intent.succeeded",
  "data": { "object": { "amount": 2000, "currency": "eur", "description": "caf\\u00e9" } },
  "1": "x"
}`;

const SLACK_BODY = `{
  "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
  "team_id": "T061EG9R6",
  "event": { "type": "app_mention", "user": "U061F7AUR", "text": "<@U0LAN0Z89> costs 2000", "ts": "1515449522.000016" },
  "type": "event_callback",
  "event_id": "Ev0LAN670R",
  "9": "x"
}`;

const STANDARD_BODY = `{
  "type": "contact.created",
  "timestamp": "2022-11-03T20:26:10.344522Z",
  "data": { "id": "1f81eb52-5198-4599-803e-771906343485", "score": 2000, "name": "Ren\\u00e9" },
  "7": "x"
}`;

const GENERIC_CONFIG: SourceConfig = {
	signatureHeader: "X-Acme-Signature",
	algorithm: "sha512",
	encoding: "base64",
	signaturePrefix: "sha512=",
	timestampHeader: "X-Acme-Timestamp",
	deliveryIdHeader: "X-Acme-Delivery",
	eventTypeHeader: "X-Acme-Event",
};

const CASES: SourceCase[] = [
	{
		source: "github",
		config: {},
		secret: () => `gh-${crypto.randomUUID()}`,
		body: GITHUB_BODY,
		sign: async (body, secret) =>
			new Headers({
				"X-Hub-Signature-256": await signGithub(secret, body),
				"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
				"X-GitHub-Event": "push",
				"Content-Type": "application/json",
			}),
		signatureHeader: "X-Hub-Signature-256",
		deliveryId: "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		eventType: "push",
		timestamped: false,
	},
	{
		source: "stripe",
		config: {},
		secret: () => `whsec_${crypto.randomUUID().replace(/-/g, "")}`,
		body: STRIPE_BODY,
		// The synchronous generateTestHeaderString needs Node's crypto provider; in workerd the
		// library's Subtle provider is async-only, so its async twin is the one a Worker sender uses.
		sign: async (payload, secret, timestamp) =>
			new Headers({
				"Stripe-Signature": await Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret, timestamp }),
			}),
		signatureHeader: "Stripe-Signature",
		deliveryId: "evt_1QzXyZAbCdEf",
		eventType: "payment_intent.succeeded",
		timestamped: true,
	},
	{
		source: "slack",
		config: {},
		secret: () => crypto.randomUUID().replace(/-/g, ""),
		body: SLACK_BODY,
		// Slack's documented recipe: HMAC-SHA256 of `v0:{timestamp}:{body}`, hex, prefixed `v0=`.
		sign: async (body, secret, at) =>
			new Headers({
				"X-Slack-Signature": `v0=${hex(await hmac("SHA-256", secret, `v0:${at}:${body}`))}`,
				"X-Slack-Request-Timestamp": String(at),
			}),
		signatureHeader: "X-Slack-Signature",
		deliveryId: "Ev0LAN670R",
		eventType: "app_mention",
		timestamped: true,
	},
	{
		source: "standard",
		config: {},
		secret: generateStandardWebhookSecret,
		body: STANDARD_BODY,
		sign: async (body, secret, at) =>
			new Headers({
				"webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
				"webhook-timestamp": String(at),
				"webhook-signature": new Webhook(secret).sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", new Date(at * 1000), body),
			}),
		signatureHeader: "webhook-signature",
		deliveryId: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
		eventType: "contact.created",
		timestamped: true,
	},
	{
		source: "hmac",
		config: GENERIC_CONFIG,
		secret: () => `acme-${crypto.randomUUID()}`,
		body: STANDARD_BODY,
		sign: async (body, secret, at) =>
			new Headers({
				"X-Acme-Signature": `sha512=${base64(await hmac("SHA-512", secret, `${at}.${body}`))}`,
				"X-Acme-Timestamp": String(at),
				"X-Acme-Delivery": "dlv_123",
				"X-Acme-Event": "invoice.paid",
			}),
		signatureHeader: "X-Acme-Signature",
		deliveryId: "dlv_123",
		eventType: "invoice.paid",
		timestamped: true,
	},
];

function verify(
	c: Pick<SourceCase, "source" | "config">,
	secrets: string[],
	headers: Headers,
	body: string | Uint8Array,
	now = NOW,
): Promise<VerifyResult> {
	return verifyWebhook({
		source: c.source,
		config: c.config,
		secrets,
		headers,
		body: typeof body === "string" ? encoder.encode(body) : body,
		now,
	});
}

describe.each(CASES)("$source signatures", (c) => {
	it("accepts the sender's signature on the raw body and reads the delivery id and event type", async () => {
		const secret = c.secret();
		const result = await verify(c, [secret], await c.sign(c.body, secret, NOW_S), c.body);
		expect(result).toEqual({
			ok: true,
			deliveryId: c.deliveryId,
			eventType: c.eventType,
			timestamp: c.timestamped ? NOW : null,
			secretIndex: 0,
		});
	});

	it("refuses a tampered body with bad-signature", async () => {
		const secret = c.secret();
		const headers = await c.sign(c.body, secret, NOW_S);
		const tampered = c.body.replace("2000", "2001");
		expect(tampered).not.toBe(c.body);
		expect(await verify(c, [secret], headers, tampered)).toEqual({ ok: false, reason: "bad-signature" });
	});

	it("refuses a signature made with another secret with bad-signature", async () => {
		const headers = await c.sign(c.body, c.secret(), NOW_S);
		expect(await verify(c, [c.secret()], headers, c.body)).toEqual({ ok: false, reason: "bad-signature" });
	});

	it("accepts the second active secret during a rotation and says which matched", async () => {
		const [current, previous] = [c.secret(), c.secret()];
		const result = await verify(c, [current, previous], await c.sign(c.body, previous, NOW_S), c.body);
		expect(result).toMatchObject({ ok: true, secretIndex: 1, deliveryId: c.deliveryId });
	});

	it("refuses a body that was parsed and re-serialised with bad-signature", async () => {
		const secret = c.secret();
		const headers = await c.sign(c.body, secret, NOW_S);
		expect(await verify(c, [secret], headers, reserialise(c.body))).toEqual({ ok: false, reason: "bad-signature" });
	});

	it("refuses a request without the signature header with missing-signature", async () => {
		const secret = c.secret();
		const headers = await c.sign(c.body, secret, NOW_S);
		headers.delete(c.signatureHeader);
		expect(await verify(c, [secret], headers, c.body)).toEqual({ ok: false, reason: "missing-signature" });
	});

	it("refuses a garbled signature header with malformed-signature", async () => {
		const secret = c.secret();
		const headers = await c.sign(c.body, secret, NOW_S);
		headers.set(c.signatureHeader, "v9=zz");
		expect(await verify(c, [secret], headers, c.body)).toEqual({ ok: false, reason: "malformed-signature" });
	});
});

describe.each(CASES.filter((c) => c.timestamped))("$source timestamps", (c) => {
	it("refuses an authentic but old signature with stale-timestamp", async () => {
		const secret = c.secret();
		const old = NOW_S - 301;
		expect(await verify(c, [secret], await c.sign(c.body, secret, old), c.body)).toEqual({
			ok: false,
			reason: "stale-timestamp",
		});
		// At the edge of the window it still passes.
		expect(await verify(c, [secret], await c.sign(c.body, secret, NOW_S - 300), c.body)).toMatchObject({ ok: true });
	});

	it("refuses a timestamp beyond the tolerance in the future with stale-timestamp", async () => {
		const secret = c.secret();
		const headers = await c.sign(c.body, secret, NOW_S + 301);
		expect(await verify(c, [secret], headers, c.body)).toEqual({ ok: false, reason: "stale-timestamp" });
	});

	it("refuses a stale timestamp that is not authentic with bad-signature", async () => {
		const headers = await c.sign(c.body, c.secret(), NOW_S - 3600);
		expect(await verify(c, [c.secret()], headers, c.body)).toEqual({ ok: false, reason: "bad-signature" });
	});
});

describe("GitHub", () => {
	const github = CASES[0] as SourceCase;

	it("refuses the legacy SHA-1 header alone with missing-signature", async () => {
		const headers = new Headers({ "X-Hub-Signature": `sha1=${"0".repeat(40)}` });
		expect(await verify(github, ["s"], headers, "{}")).toEqual({ ok: false, reason: "missing-signature" });
	});

	it("refuses a truncated digest with malformed-signature", async () => {
		const full = await signGithub("s", "{}");
		const headers = new Headers({ "X-Hub-Signature-256": full.slice(0, -2) });
		expect(await verify(github, ["s"], headers, "{}")).toEqual({ ok: false, reason: "malformed-signature" });
	});

	it("verifies deliveries without id headers, reporting null ids", async () => {
		const headers = new Headers({ "X-Hub-Signature-256": await signGithub("s", "{}") });
		expect(await verify(github, ["s"], headers, "{}")).toEqual({
			ok: true,
			deliveryId: null,
			eventType: null,
			timestamp: null,
			secretIndex: 0,
		});
	});
});

describe("Stripe", () => {
	const stripe = CASES[1] as SourceCase;
	const secret = "whsec_test_5e3c0f4a9b8d7e6f";

	async function stripeHeader(body: string, key: string, timestamp = NOW_S): Promise<string> {
		return Stripe.webhooks.generateTestHeaderStringAsync({ payload: body, secret: key, timestamp });
	}

	it("accepts a header with two v1 signatures when one of them matches", async () => {
		const good = await stripeHeader(STRIPE_BODY, secret);
		const other = await stripeHeader(STRIPE_BODY, "whsec_someone_else");
		const otherV1 = other.split(",")[1] as string;
		for (const header of [`${good},${otherV1}`, `t=${NOW_S},${otherV1},${good.split(",")[1]}`]) {
			const result = await verify(stripe, [secret], new Headers({ "Stripe-Signature": header }), STRIPE_BODY);
			expect(result).toMatchObject({ ok: true, secretIndex: 0, deliveryId: "evt_1QzXyZAbCdEf" });
		}
		const headers = new Headers({ "Stripe-Signature": `t=${NOW_S},${otherV1},${otherV1}` });
		expect(await verify(stripe, [secret], headers, STRIPE_BODY)).toEqual({ ok: false, reason: "bad-signature" });
	});

	it("verifies a body nested 6,000 deep but reads no ids from it (the delivery is keyed by its hash)", async () => {
		const body = `{"id":"evt_deep","type":"x","data":${"[".repeat(6000)}${"]".repeat(6000)}}`;
		const headers = new Headers({ "Stripe-Signature": await stripeHeader(body, secret) });
		const result = await verify(stripe, [secret], headers, body);
		expect(result).toMatchObject({ ok: true, secretIndex: 0, deliveryId: null, eventType: null });
	});

	it("keys the HMAC with the whole whsec_ string, as the stripe library does", async () => {
		const header = await stripeHeader(STRIPE_BODY, secret);
		expect(header).toBe(`t=${NOW_S},v1=${hex(await hmac("SHA-256", secret, `${NOW_S}.${STRIPE_BODY}`))}`);
		const event = await Stripe.webhooks.constructEventAsync(STRIPE_BODY, header, secret, 300, undefined, NOW);
		expect(event).toMatchObject({ id: "evt_1QzXyZAbCdEf", type: "payment_intent.succeeded" });
	});

	it("ignores v0 signatures and needs a v1", async () => {
		const good = await stripeHeader(STRIPE_BODY, secret);
		const withV0 = new Headers({ "Stripe-Signature": `${good},v0=${"ab".repeat(32)}` });
		expect(await verify(stripe, [secret], withV0, STRIPE_BODY)).toMatchObject({ ok: true });
		const onlyV0 = new Headers({ "Stripe-Signature": `t=${NOW_S},v0=${"ab".repeat(32)}` });
		expect(await verify(stripe, [secret], onlyV0, STRIPE_BODY)).toEqual({ ok: false, reason: "malformed-signature" });
	});

	it("refuses a header without a usable timestamp with malformed-signature", async () => {
		const v1 = (await stripeHeader(STRIPE_BODY, secret)).split(",")[1] as string;
		for (const header of [v1, `t=soon,${v1}`, `t=${NOW_S},t=${NOW_S},${v1}`]) {
			const result = await verify(stripe, [secret], new Headers({ "Stripe-Signature": header }), STRIPE_BODY);
			expect(result).toEqual({ ok: false, reason: "malformed-signature" });
		}
	});

	it("applies a configured tolerance", async () => {
		const headers = new Headers({ "Stripe-Signature": await stripeHeader(STRIPE_BODY, secret, NOW_S - 400) });
		expect(await verify(stripe, [secret], headers, STRIPE_BODY)).toEqual({ ok: false, reason: "stale-timestamp" });
		expect(
			await verify({ ...stripe, config: { toleranceSeconds: 600 } }, [secret], headers, STRIPE_BODY),
		).toMatchObject({ ok: true, timestamp: (NOW_S - 400) * 1000 });
	});
});

describe("Slack", () => {
	const slack = CASES[2] as SourceCase;
	const secret = "8f742231b10e8888abcd99yyyzzz85a5";

	it("accepts Slack's documented example (a form-encoded slash command) with null ids", async () => {
		const body =
			"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
		const headers = new Headers({
			"X-Slack-Request-Timestamp": "1531420618",
			"X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
			"Content-Type": "application/x-www-form-urlencoded",
		});
		expect(await verify(slack, [secret], headers, body, 1531420618_000 + 10_000)).toEqual({
			ok: true,
			deliveryId: null,
			eventType: null,
			timestamp: 1531420618_000,
			secretIndex: 0,
		});
	});

	it("returns the url_verification challenge once the request verifies", async () => {
		const body = `{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`;
		const result = await verify(slack, [secret], await slack.sign(body, secret, NOW_S), body);
		expect(result).toEqual({
			ok: true,
			deliveryId: null,
			eventType: "url_verification",
			timestamp: NOW,
			secretIndex: 0,
			challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
		});
		const forged = await slack.sign(body, "not-the-secret", NOW_S);
		expect(await verify(slack, [secret], forged, body)).toEqual({ ok: false, reason: "bad-signature" });
	});

	it("refuses a signature without its timestamp header with malformed-signature", async () => {
		const headers = await slack.sign(SLACK_BODY, secret, NOW_S);
		headers.delete("X-Slack-Request-Timestamp");
		expect(await verify(slack, [secret], headers, SLACK_BODY)).toEqual({ ok: false, reason: "malformed-signature" });
	});

	it("refuses a signature replayed under a newer timestamp header with bad-signature", async () => {
		const headers = await slack.sign(SLACK_BODY, secret, NOW_S - 3600);
		headers.set("X-Slack-Request-Timestamp", String(NOW_S));
		expect(await verify(slack, [secret], headers, SLACK_BODY)).toEqual({ ok: false, reason: "bad-signature" });
	});
});

describe("Standard Webhooks", () => {
	const standard = CASES[3] as SourceCase;
	const id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";

	async function ed25519(): Promise<{ publicKey: string; sign: (content: string) => Promise<string> }> {
		const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as CryptoKeyPair;
		const raw = (await crypto.subtle.exportKey("raw", pair.publicKey)) as ArrayBuffer;
		return {
			publicKey: `whpk_${base64(raw)}`,
			sign: async (content) =>
				`v1a,${base64(await crypto.subtle.sign({ name: "Ed25519" }, pair.privateKey, encoder.encode(content)))}`,
		};
	}

	function headers(signature: string, at = NOW_S): Headers {
		return new Headers({ "webhook-id": id, "webhook-timestamp": String(at), "webhook-signature": signature });
	}

	it("verifies v1a (Ed25519) signatures against a whpk_ public key", async () => {
		const key = await ed25519();
		const signature = await key.sign(`${id}.${NOW_S}.${STANDARD_BODY}`);
		expect(await verify(standard, [key.publicKey], headers(signature), STANDARD_BODY)).toEqual({
			ok: true,
			deliveryId: id,
			eventType: "contact.created",
			timestamp: NOW,
			secretIndex: 0,
		});
		const tampered = STANDARD_BODY.replace("2000", "2001");
		expect(await verify(standard, [key.publicKey], headers(signature), tampered)).toEqual({
			ok: false,
			reason: "bad-signature",
		});
		const other = await ed25519();
		expect(await verify(standard, [other.publicKey], headers(signature), STANDARD_BODY)).toEqual({
			ok: false,
			reason: "bad-signature",
		});
		expect(await verify(standard, [key.publicKey], headers(signature, NOW_S - 301), STANDARD_BODY)).toEqual({
			ok: false,
			reason: "bad-signature",
		});
		const stale = await key.sign(`${id}.${NOW_S - 301}.${STANDARD_BODY}`);
		expect(await verify(standard, [key.publicKey], headers(stale, NOW_S - 301), STANDARD_BODY)).toEqual({
			ok: false,
			reason: "stale-timestamp",
		});
	});

	it("rotates from a whsec_ secret to a whpk_ key, matching whichever signature fits", async () => {
		const key = await ed25519();
		const oldSecret = generateStandardWebhookSecret();
		const v1 = new Webhook(generateStandardWebhookSecret()).sign(id, new Date(NOW), STANDARD_BODY);
		const v1a = await key.sign(`${id}.${NOW_S}.${STANDARD_BODY}`);
		expect(await verify(standard, [oldSecret, key.publicKey], headers(`${v1} ${v1a}`), STANDARD_BODY)).toMatchObject({
			ok: true,
			secretIndex: 1,
		});
	});

	it("skips unknown signature versions but needs one it knows", async () => {
		const secret = generateStandardWebhookSecret();
		const v1 = new Webhook(secret).sign(id, new Date(NOW), STANDARD_BODY);
		expect(await verify(standard, [secret], headers(`v2,abc ${v1}`), STANDARD_BODY)).toMatchObject({ ok: true });
		expect(await verify(standard, [secret], headers("v2,abc"), STANDARD_BODY)).toEqual({
			ok: false,
			reason: "malformed-signature",
		});
	});

	it("refuses a signature without its id or timestamp, or an id with a '.', with malformed-signature", async () => {
		const secret = generateStandardWebhookSecret();
		const v1 = new Webhook(secret).sign(id, new Date(NOW), STANDARD_BODY);
		for (const drop of ["webhook-id", "webhook-timestamp"]) {
			const h = headers(v1);
			h.delete(drop);
			expect(await verify(standard, [secret], h, STANDARD_BODY)).toEqual({ ok: false, reason: "malformed-signature" });
		}
		const dotted = headers(v1);
		dotted.set("webhook-id", "msg.1");
		expect(await verify(standard, [secret], dotted, STANDARD_BODY)).toEqual({
			ok: false,
			reason: "malformed-signature",
		});
	});

	it("signs outgoing deliveries exactly as the reference library, which verifies them", async () => {
		// The specification's example vector.
		const vector = {
			id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
			timestamp: 1614265330,
			body: '{"test": 2432232314}',
			secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		};
		const expected = new Webhook(vector.secret).sign(vector.id, new Date(vector.timestamp * 1000), vector.body);
		expect(expected).toBe("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
		expect(await signStandardWebhook(vector)).toBe(expected);
		expect(await signStandardWebhook({ ...vector, body: encoder.encode(vector.body) })).toBe(expected);

		const secret = generateStandardWebhookSecret();
		const timestamp = Math.floor(Date.now() / 1000);
		const signature = await signStandardWebhook({ id, timestamp, body: STANDARD_BODY, secret });
		const received = new Webhook(secret).verify(STANDARD_BODY, {
			"webhook-id": id,
			"webhook-timestamp": String(timestamp),
			"webhook-signature": signature,
		});
		expect(received).toMatchObject({ type: "contact.created" });
	});

	it("refuses to sign with a timestamp in milliseconds or an id the receiver would reject", async () => {
		const secret = generateStandardWebhookSecret();
		await expect(signStandardWebhook({ id, timestamp: NOW, body: "{}", secret })).rejects.toThrow(RangeError);
		await expect(signStandardWebhook({ id: "a.b", timestamp: NOW_S, body: "{}", secret })).rejects.toThrow(RangeError);
		await expect(signStandardWebhook({ id, timestamp: NOW_S, body: "{}", secret: "whpk_AAAA" })).rejects.toThrow(
			TypeError,
		);
	});

	it("generates whsec_ secrets of 24 random bytes", () => {
		const a = generateStandardWebhookSecret();
		expect(a).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
		expect(a).not.toBe(generateStandardWebhookSecret());
		expect(() => new Webhook(a)).not.toThrow();
	});
});

describe("generic HMAC", () => {
	const generic = CASES[4] as SourceCase;

	it("defaults to X-Signature, SHA-256, hex, no timestamp", async () => {
		const body = encoder.encode('{"a":1}');
		const headers = new Headers({ "X-Signature": hex(await hmac("SHA-256", "s3cret", body)) });
		expect(await verify({ source: "hmac", config: {} }, ["s3cret"], headers, body)).toEqual({
			ok: true,
			deliveryId: null,
			eventType: null,
			timestamp: null,
			secretIndex: 0,
		});
	});

	it("verifies the raw bytes, even ones that are not valid UTF-8", async () => {
		const body = new Uint8Array([0x7b, 0xff, 0xfe, 0x00, 0xc3, 0x28, 0x7d]);
		const headers = new Headers({ "X-Signature": hex(await hmac("SHA-256", "s3cret", body)) });
		expect(await verify({ source: "hmac", config: {} }, ["s3cret"], headers, body)).toMatchObject({ ok: true });
		const decoded = encoder.encode(new TextDecoder().decode(body));
		expect(await verify({ source: "hmac", config: {} }, ["s3cret"], headers, decoded)).toEqual({
			ok: false,
			reason: "bad-signature",
		});
	});

	it("accepts URL-safe base64 without padding", async () => {
		const body = encoder.encode("hello");
		const mac = base64(await hmac("SHA-256", "k", body))
			.replace(/\+/g, "-")
			.replace(/\//g, "_")
			.replace(/=+$/, "");
		const headers = new Headers({ "X-Signature": mac });
		expect(await verify({ source: "hmac", config: { encoding: "base64" } }, ["k"], headers, body)).toMatchObject({
			ok: true,
		});
	});

	it("refuses a missing prefix, a digest of the wrong length or a missing timestamp with malformed-signature", async () => {
		const secret = generic.secret();
		const signed = await generic.sign(generic.body, secret, NOW_S);
		const value = signed.get("X-Acme-Signature") as string;
		const variants: Array<[string, string | null]> = [
			["X-Acme-Signature", value.slice("sha512=".length)],
			["X-Acme-Signature", `sha512=${base64(await hmac("SHA-256", secret, generic.body))}`],
			["X-Acme-Timestamp", null],
			["X-Acme-Timestamp", "yesterday"],
		];
		for (const [name, replacement] of variants) {
			const headers = new Headers(signed);
			if (replacement === null) headers.delete(name);
			else headers.set(name, replacement);
			expect(await verify(generic, [secret], headers, generic.body)).toEqual({
				ok: false,
				reason: "malformed-signature",
			});
		}
	});

	it("binds the timestamp: the same MAC under another timestamp fails", async () => {
		const secret = generic.secret();
		const headers = await generic.sign(generic.body, secret, NOW_S);
		headers.set("X-Acme-Timestamp", String(NOW_S - 1));
		expect(await verify(generic, [secret], headers, generic.body)).toEqual({ ok: false, reason: "bad-signature" });
		const bytes = concat(`${NOW_S}.`, encoder.encode(generic.body));
		expect(headers.get("X-Acme-Signature")).toBe(`sha512=${base64(await hmac("SHA-512", secret, bytes))}`);
	});
});

describe("configuration", () => {
	it("accepts an empty config and rejects unknown keys, bad header names and a disabled tolerance", () => {
		expect(SourceConfigSchema.parse({})).toEqual({});
		expect(SourceConfigSchema.parse(GENERIC_CONFIG)).toEqual(GENERIC_CONFIG);
		expect(SourceConfigSchema.safeParse({ secret: "x" }).success).toBe(false);
		expect(SourceConfigSchema.safeParse({ signatureHeader: "X Bad" }).success).toBe(false);
		expect(SourceConfigSchema.safeParse({ toleranceSeconds: 0 }).success).toBe(false);
		expect(SourceConfigSchema.safeParse({ algorithm: "sha1" }).success).toBe(false);
	});

	it("throws when called without any active secret", async () => {
		await expect(verify({ source: "github", config: {} }, [], new Headers(), "{}")).rejects.toThrow(RangeError);
	});

	it("tells which secrets a source can use", () => {
		expect(isValidWebhookSecret("standard", generateStandardWebhookSecret())).toBe(true);
		expect(isValidWebhookSecret("standard", `whpk_${base64(new Uint8Array(32))}`)).toBe(true);
		expect(isValidWebhookSecret("standard", `whsec_${base64(new Uint8Array(8))}`)).toBe(false);
		expect(isValidWebhookSecret("standard", "not base64!")).toBe(false);
		expect(isValidWebhookSecret("stripe", "whsec_abc")).toBe(true);
		expect(isValidWebhookSecret("github", " padded ")).toBe(false);
		expect(isValidWebhookSecret("github", "")).toBe(false);
	});
});

describe("forwarding retry schedule", () => {
	it("follows Standard Webhooks' schedule and scales it", async () => {
		const { forwardRetryDelay } = await import("../../src/webhooks");
		expect([1, 2, 3, 4, 5, 6, 7, 8].map((a) => forwardRetryDelay(a))).toEqual([
			5, 300, 1800, 7200, 18000, 36000, 36000, 36000,
		]);
		expect(forwardRetryDelay(3, 0.01)).toBe(18);
		expect(forwardRetryDelay(3, 0)).toBe(0);
		expect(forwardRetryDelay(7, 10)).toBe(12 * 3600); // never past the queue's longest delay
	});
});
