/** Hashing and constant-time comparison, synchronous where node:crypto allows (no promise hop on hot paths). */
import { createHash } from "node:crypto";

const encoder = new TextEncoder();

/** SHA-256, hex, computed synchronously. */
export function sha256Hex(value: string | Uint8Array): string {
	return createHash("sha256").update(value).digest("hex");
}

/** Constant-time equality of two strings of the same length (e.g. two hex digests); different lengths are unequal. */
export function timingSafeEqualStrings(a: string, b: string): boolean {
	const ab = encoder.encode(a);
	const bb = encoder.encode(b);
	if (ab.byteLength !== bb.byteLength) return false;
	return crypto.subtle.timingSafeEqual(ab, bb);
}

/** Constant-time equality of two byte strings; different lengths are unequal (callers compare public-length values). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
	return a.byteLength === b.byteLength && crypto.subtle.timingSafeEqual(a, b);
}
