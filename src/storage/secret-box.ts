/**
 * Secrets at rest (webhook signing secrets, tenant provider keys): AES-256-GCM with a key from the
 * ENCRYPTION_KEY Worker secret (32 bytes, base64). A sealed value is `v1.<iv>.<ciphertext>`, base64url;
 * the tenant id is bound in as additional data, so a sealed secret cannot be moved to another tenant.
 */
const keys = new Map<string, Promise<CryptoKey>>();

function b64urlEncode(bytes: Uint8Array): string {
	let bin = "";
	for (const b of bytes) bin += String.fromCharCode(b);
	return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64urlDecode(text: string): Uint8Array {
	const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
	const out = new Uint8Array(bin.length);
	for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
	return out;
}

function importKey(keyBase64: string): Promise<CryptoKey> {
	let key = keys.get(keyBase64);
	if (!key) {
		const raw = b64urlDecode(keyBase64.trim());
		if (raw.byteLength !== 32) throw new Error("ENCRYPTION_KEY must be 32 bytes, base64");
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
	return `v1.${b64urlEncode(iv)}.${b64urlEncode(new Uint8Array(ciphertext))}`;
}

/** Decrypts a value sealed by {@link seal} for the same tenant; throws if it was altered or moved. */
export async function unseal(keyBase64: string, tenantId: string, sealed: string): Promise<string> {
	const [version, iv, data] = sealed.split(".");
	if (version !== "v1" || !iv || !data) throw new Error("not a sealed secret");
	const plaintext = await crypto.subtle.decrypt(
		{ name: "AES-GCM", iv: b64urlDecode(iv), additionalData: new TextEncoder().encode(tenantId) },
		await importKey(keyBase64),
		b64urlDecode(data),
	);
	return new TextDecoder().decode(plaintext);
}
