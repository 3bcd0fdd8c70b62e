/** Hashing helpers shared by the credential paths. */
import { createHash } from "node:crypto";

const encoder = new TextEncoder();

/** SHA-256, hex, computed synchronously (no promise hop on the hot path). */
export function sha256Hex(value: string | Uint8Array): string {
	return createHash("sha256").update(value).digest("hex");
}

export function toHex(bytes: Uint8Array): string {
	let out = "";
	for (const b of bytes) out += b.toString(16).padStart(2, "0");
	return out;
}

/** Constant-time equality of two strings of the same length (e.g. two hex digests). */
export function timingSafeEqualStrings(a: string, b: string): boolean {
	const ab = encoder.encode(a);
	const bb = encoder.encode(b);
	if (ab.byteLength !== bb.byteLength) return false;
	return crypto.subtle.timingSafeEqual(ab, bb);
}
