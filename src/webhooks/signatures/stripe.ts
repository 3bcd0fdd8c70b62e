/**
 * Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over `${t}.${body}`, HMAC-SHA256 keyed with
 * the whole `whsec_…` string as UTF-8 bytes (as the `stripe` library does). Other schemes (`v0`) are ignored.
 */

import { fromHex } from "../../lib";
import {
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

export async function verifyStripe({ config, secrets, headers, body, now }: VerifyInput): Promise<VerifyResult> {
	const header = readHeader(headers, "stripe-signature");
	if (header === null) return fail("missing-signature");

	let t: string | null = null;
	const signatures: Uint8Array[] = [];
	for (const item of header.split(",")) {
		const eq = item.indexOf("=");
		if (eq < 0) continue;
		const key = item.slice(0, eq).trim();
		const value = item.slice(eq + 1).trim();
		if (key === "t") {
			if (t !== null || parseUnixSeconds(value) === null) return fail("malformed-signature");
			t = value;
		} else if (key === "v1") {
			const signature = fromHex(value);
			if (signature?.byteLength !== 32) return fail("malformed-signature");
			signatures.push(signature);
		}
	}
	if (t === null || signatures.length === 0 || signatures.length > MAX_SIGNATURES) {
		return fail("malformed-signature");
	}

	const secretIndex = await matchHmac("sha256", secrets.map(utf8), withPrefix(`${t}.`, body), signatures);
	if (secretIndex < 0) return fail("bad-signature");
	const seconds = Number(t);
	if (!isFresh(seconds, now, config.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS)) return fail("stale-timestamp");

	const event = readJsonObject(body);
	return {
		ok: true,
		deliveryId: stringField(event, "id"),
		eventType: stringField(event, "type"),
		timestamp: seconds * 1000,
		secretIndex,
	};
}
