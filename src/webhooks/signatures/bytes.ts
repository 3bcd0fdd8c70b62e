/** Byte, encoding, MAC and timestamp helpers shared by the per-source verifiers. */
import { bytesEqual, exceedsJsonDepth, fromBase64, isRecord } from "../../lib";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/** How many signatures one header may carry; more is treated as malformed (bounds the work per request). */
export const MAX_SIGNATURES = 16;

export type HmacAlgorithm = "sha256" | "sha512";

const HASH: Record<HmacAlgorithm, { name: string; bytes: number }> = {
	sha256: { name: "SHA-256", bytes: 32 },
	sha512: { name: "SHA-512", bytes: 64 },
};

export function macLength(algorithm: HmacAlgorithm): number {
	return HASH[algorithm].bytes;
}

export function utf8(value: string): Uint8Array {
	return encoder.encode(value);
}

/** The signed content `prefix + body`, built from bytes so the body is never decoded and re-encoded. */
export function withPrefix(prefix: string, body: Uint8Array): Uint8Array {
	const head = encoder.encode(prefix);
	const out = new Uint8Array(head.byteLength + body.byteLength);
	out.set(head, 0);
	out.set(body, head.byteLength);
	return out;
}

/** A header's value, trimmed; null when absent or empty. */
export function readHeader(headers: Headers, name: string): string | null {
	const value = headers.get(name)?.trim();
	return value ? value : null;
}

/**
 * Base64 as senders write MACs and keys: standard or URL-safe alphabet (even mixed), padding optional
 * (any trailing `=` is dropped); null when it is not base64.
 */
export function decodeBase64(value: string): Uint8Array | null {
	return fromBase64(value.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, ""));
}

export async function hmac(algorithm: HmacAlgorithm, key: Uint8Array, content: Uint8Array): Promise<Uint8Array> {
	const cryptoKey = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: HASH[algorithm].name }, false, [
		"sign",
	]);
	return new Uint8Array(await crypto.subtle.sign("HMAC", cryptoKey, content));
}

/**
 * Index of the first key whose HMAC of `content` equals one of `candidates`, or -1. One MAC per key
 * whatever the number of candidates, so a header listing many signatures costs no extra hashing of
 * the body. Empty keys never match.
 */
export async function matchHmac(
	algorithm: HmacAlgorithm,
	keys: ReadonlyArray<Uint8Array | null>,
	content: Uint8Array,
	candidates: readonly Uint8Array[],
): Promise<number> {
	for (const [index, key] of keys.entries()) {
		if (!key || key.byteLength === 0) continue;
		const mac = await hmac(algorithm, key, content);
		// Every candidate is compared, so the time taken does not say which one matched.
		let matched = false;
		for (const candidate of candidates) matched = bytesEqual(mac, candidate) || matched;
		if (matched) return index;
	}
	return -1;
}

/** A unix timestamp in whole seconds, as the senders write it; null when it is not one. */
export function parseUnixSeconds(value: string): number | null {
	return /^\d{1,12}$/.test(value) ? Number(value) : null;
}

/** Whether a signed timestamp (seconds) is within `toleranceSeconds` of `now` (ms), in either direction. */
export function isFresh(timestampSeconds: number, now: number, toleranceSeconds: number): boolean {
	return Math.abs(now - timestampSeconds * 1000) <= toleranceSeconds * 1000;
}

/**
 * The body as a JSON object, or null (not JSON, not an object, not UTF-8, or nested deeper than
 * MAX_JSON_DEPTH). Only ever called on a body whose signature has already been verified, and only to
 * read ids out of it.
 */
export function readJsonObject(body: Uint8Array): Record<string, unknown> | null {
	let i = 0;
	while (i < body.length && (body[i] === 0x20 || body[i] === 0x09 || body[i] === 0x0a || body[i] === 0x0d)) i++;
	if (body[i] !== 0x7b /* { */) return null;
	// Only top-level fields are read: a body nested too deep is not parsed at all (its ids go unread), so no
	// value too deep to serialise is ever held.
	if (exceedsJsonDepth(body)) return null;
	try {
		const value: unknown = JSON.parse(decoder.decode(body));
		return isRecord(value) ? value : null;
	} catch {
		return null;
	}
}

/** A non-empty string field of a JSON object, or null. */
export function stringField(object: Record<string, unknown> | null | undefined, key: string): string | null {
	const value = object?.[key];
	return typeof value === "string" && value.length > 0 ? value : null;
}
