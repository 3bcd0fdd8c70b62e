/**
 * Standard Webhooks (https://www.standardwebhooks.com/): `webhook-id`, `webhook-timestamp` and a
 * space-separated `webhook-signature` list over `${id}.${timestamp}.${body}`. `v1` is HMAC-SHA256 keyed
 * with the base64 bytes after `whsec_`; `v1a` is Ed25519, checked against a `whpk_` public key.
 */

import { toBase64 } from "../../lib";
import {
	decodeBase64,
	hmac,
	isFresh,
	MAX_SIGNATURES,
	matchHmac,
	parseUnixSeconds,
	readHeader,
	readJsonObject,
	stringField,
	utf8,
	withPrefix,
} from "./bytes";
import { DEFAULT_TOLERANCE_SECONDS, fail, type VerifyInput, type VerifyResult } from "./schema";

export const STANDARD_SECRET_PREFIX = "whsec_";
export const STANDARD_PUBLIC_KEY_PREFIX = "whpk_";
const MAX_ID_LENGTH = 256;

type StandardKey = { kind: "hmac"; key: Uint8Array } | { kind: "ed25519"; key: Uint8Array };

/** A `whsec_<base64>` secret (the prefix is optional, as in the reference library) or a `whpk_<base64>` public key. */
export function parseStandardKey(secret: string): StandardKey | null {
	if (secret.startsWith(STANDARD_PUBLIC_KEY_PREFIX)) {
		const key = decodeBase64(secret.slice(STANDARD_PUBLIC_KEY_PREFIX.length));
		return key?.byteLength === 32 ? { kind: "ed25519", key } : null;
	}
	const key = decodeBase64(
		secret.startsWith(STANDARD_SECRET_PREFIX) ? secret.slice(STANDARD_SECRET_PREFIX.length) : secret,
	);
	return key && key.byteLength > 0 ? { kind: "hmac", key } : null;
}

export async function verifyStandard({ config, secrets, headers, body, now }: VerifyInput): Promise<VerifyResult> {
	const header = readHeader(headers, "webhook-signature");
	if (header === null) return fail("missing-signature");
	const id = readHeader(headers, "webhook-id");
	const t = readHeader(headers, "webhook-timestamp");
	const seconds = t === null ? null : parseUnixSeconds(t);
	// The spec asks that the id carry no `.`, so the signed content splits one way only.
	if (id === null || id.length > MAX_ID_LENGTH || id.includes(".") || seconds === null) {
		return fail("malformed-signature");
	}

	const v1: Uint8Array[] = [];
	const v1a: Uint8Array[] = [];
	const entries = header.split(" ").filter((entry) => entry.length > 0);
	if (entries.length > MAX_SIGNATURES) return fail("malformed-signature");
	for (const entry of entries) {
		const comma = entry.indexOf(",");
		const version = comma < 0 ? entry : entry.slice(0, comma);
		// Versions this verifier does not know are skipped, as the spec's reference libraries do.
		if (version !== "v1" && version !== "v1a") continue;
		const signature = comma < 0 ? null : decodeBase64(entry.slice(comma + 1));
		if (version === "v1" && signature?.byteLength === 32) v1.push(signature);
		else if (version === "v1a" && signature?.byteLength === 64) v1a.push(signature);
		else return fail("malformed-signature");
	}
	if (v1.length === 0 && v1a.length === 0) return fail("malformed-signature");

	const content = withPrefix(`${id}.${t}.`, body);
	const secretIndex = await matchStandardKeys(secrets, content, v1, v1a);
	if (secretIndex < 0) return fail("bad-signature");
	if (!isFresh(seconds, now, config.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS)) return fail("stale-timestamp");

	return {
		ok: true,
		deliveryId: id,
		eventType: stringField(readJsonObject(body), "type"),
		timestamp: seconds * 1000,
		secretIndex,
	};
}

async function matchStandardKeys(
	secrets: readonly string[],
	content: Uint8Array,
	v1: readonly Uint8Array[],
	v1a: readonly Uint8Array[],
): Promise<number> {
	for (const [index, secret] of secrets.entries()) {
		const parsed = parseStandardKey(secret);
		if (parsed?.kind === "hmac" && v1.length > 0) {
			if ((await matchHmac("sha256", [parsed.key], content, v1)) === 0) return index;
		} else if (parsed?.kind === "ed25519" && v1a.length > 0) {
			const key = await crypto.subtle.importKey("raw", parsed.key, { name: "Ed25519" }, false, ["verify"]);
			for (const signature of v1a) {
				if (await crypto.subtle.verify({ name: "Ed25519" }, key, signature, content)) return index;
			}
		}
	}
	return -1;
}

/** A fresh Standard Webhooks signing secret: `whsec_` and 24 random bytes in base64. */
export function generateStandardWebhookSecret(): string {
	return `${STANDARD_SECRET_PREFIX}${toBase64(crypto.getRandomValues(new Uint8Array(24)))}`;
}

export interface SignStandardWebhookOptions {
	/** The `webhook-id` header value (no `.`). */
	id: string;
	/** The `webhook-timestamp` header value: unix time in whole seconds. */
	timestamp: number;
	/** The exact bytes (or text, sent as UTF-8) of the request body. */
	body: Uint8Array | string;
	/** A `whsec_…` secret. */
	secret: string;
}

/** Signs an outgoing delivery; returns the `v1,<base64>` entry for the `webhook-signature` header. */
export async function signStandardWebhook({
	id,
	timestamp,
	body,
	secret,
}: SignStandardWebhookOptions): Promise<string> {
	if (!Number.isSafeInteger(timestamp) || timestamp < 0 || timestamp >= 1e11) {
		throw new RangeError("signStandardWebhook: timestamp must be unix time in whole seconds");
	}
	if (id.length === 0 || id.includes("."))
		throw new RangeError("signStandardWebhook: id must be non-empty without '.'");
	const key = parseStandardKey(secret);
	if (key?.kind !== "hmac") throw new TypeError("signStandardWebhook: secret must be a whsec_ base64 secret");
	const bytes = typeof body === "string" ? utf8(body) : body;
	const mac = await hmac("sha256", key.key, withPrefix(`${id}.${timestamp}.`, bytes));
	return `v1,${toBase64(mac)}`;
}
