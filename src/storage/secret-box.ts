/**
 * Secrets at rest (webhook signing secrets, tenant provider keys): AES-256-GCM with a key from the
 * ENCRYPTION_KEY Worker secret (32 bytes, base64). A sealed value is `v1.<iv>.<ciphertext>`, base64url;
 * the tenant id is bound in as additional data, so a sealed secret cannot be moved to another tenant.
 */
import { fromBase64, toBase64Url } from "../lib";

const KEY_SHAPE = "ENCRYPTION_KEY must be 32 bytes, base64";
const NOT_SEALED = "not a sealed secret";

const keys = new Map<string, Promise<CryptoKey>>();

/** Base64 of either alphabet (padding optional); throws what `what` names when it is not. */
function decode(text: string, what: string): Uint8Array {
	const bytes = fromBase64(text);
	if (!bytes) throw new Error(what);
	return bytes;
}

function importKey(keyBase64: string): Promise<CryptoKey> {
	let key = keys.get(keyBase64);
	if (!key) {
		const raw = decode(keyBase64.trim(), KEY_SHAPE);
		if (raw.byteLength !== 32) throw new Error(KEY_SHAPE);
		key = crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
		keys.set(keyBase64, key);
	}
	return key;
}

/** Encrypts `plaintext` for `tenantId`. */
export async function seal(keyBase64: string, tenantId: string, plaintext: string): Promise<string> {
	const iv = crypto.getRandomValues(new Uint8Array(12));
	const ciphertext = await crypto.subtle.encrypt(
		{ name: "AES-GCM", iv, additionalData: new TextEncoder().encode(tenantId) },
		await importKey(keyBase64),
		new TextEncoder().encode(plaintext),
	);
	return `v1.${toBase64Url(iv)}.${toBase64Url(ciphertext)}`;
}

/** Decrypts a value sealed by {@link seal} for the same tenant; throws if it was altered or moved. */
export async function unseal(keyBase64: string, tenantId: string, sealed: string): Promise<string> {
	const [version, iv, data] = sealed.split(".");
	if (version !== "v1" || !iv || !data) throw new Error(NOT_SEALED);
	const plaintext = await crypto.subtle.decrypt(
		{ name: "AES-GCM", iv: decode(iv, NOT_SEALED), additionalData: new TextEncoder().encode(tenantId) },
		await importKey(keyBase64),
		decode(data, NOT_SEALED),
	);
	return new TextDecoder().decode(plaintext);
}
