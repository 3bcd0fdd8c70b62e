/**
 * Base64 (standard and URL-safe) and hex, through `Buffer` (nodejs_compat). Encoders take any bytes;
 * decoders are strict and answer null on anything that is not the encoding, because `Buffer.from`
 * alone silently skips characters it does not know.
 */
import { Buffer } from "node:buffer";

const encoder = new TextEncoder();

function buffer(bytes: Uint8Array | ArrayBuffer): Buffer {
	return bytes instanceof ArrayBuffer
		? Buffer.from(bytes)
		: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function bytesOf(value: Uint8Array | ArrayBuffer | string): Uint8Array | ArrayBuffer {
	return typeof value === "string" ? encoder.encode(value) : value;
}

/** Standard base64 with padding, of bytes or of a string's UTF-8. */
export function toBase64(value: Uint8Array | ArrayBuffer | string): string {
	return buffer(bytesOf(value)).toString("base64");
}

/** URL-safe base64 without padding (RFC 4648 §5), of bytes or of a string's UTF-8. */
export function toBase64Url(value: Uint8Array | ArrayBuffer | string): string {
	return buffer(bytesOf(value)).toString("base64url");
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;

/** Base64 in either alphabet (not mixed), padding optional; null when it is not base64. */
export function fromBase64(text: string): Uint8Array | null {
	if (!BASE64.test(text) && !BASE64URL.test(text)) return null;
	const body = text.replace(/=+$/, "");
	if (body.length % 4 === 1) return null;
	if (text.length > body.length && text.length % 4 !== 0) return null;
	const out = Buffer.from(body, BASE64.test(text) ? "base64" : "base64url");
	return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** The UTF-8 text a base64 value encodes, or null when it is not base64 (the text is decoded leniently). */
export function fromBase64Text(text: string): string | null {
	const bytes = fromBase64(text);
	return bytes ? buffer(bytes).toString("utf8") : null;
}

/** Lower-case hex. */
export function toHex(bytes: Uint8Array | ArrayBuffer): string {
	return buffer(bytes).toString("hex");
}

/** Strict hex (even length, any case); null when it is not. */
export function fromHex(text: string): Uint8Array | null {
	if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return null;
	const out = Buffer.from(text, "hex");
	return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** `n` random bytes as hex. */
export function randomHex(n: number): string {
	return toHex(crypto.getRandomValues(new Uint8Array(n)));
}
