/**
 * Generic HMAC: a configurable header, hash and encoding, an optional literal prefix, and an optional
 * timestamp header that makes the signed content `${timestamp}.${body}` and brings in the tolerance.
 */

import { fromHex } from "../../lib";
import { decodeBase64, isFresh, macLength, matchHmac, parseUnixSeconds, readHeader, utf8, withPrefix } from "./bytes";
import { DEFAULT_TOLERANCE_SECONDS, fail, type VerifyInput, type VerifyResult } from "./schema";

export const DEFAULT_SIGNATURE_HEADER = "x-signature";

export async function verifyGenericHmac({ config, secrets, headers, body, now }: VerifyInput): Promise<VerifyResult> {
	const algorithm = config.algorithm ?? "sha256";
	const header = readHeader(headers, config.signatureHeader ?? DEFAULT_SIGNATURE_HEADER);
	if (header === null) return fail("missing-signature");

	const prefix = config.signaturePrefix ?? "";
	if (!header.startsWith(prefix)) return fail("malformed-signature");
	const encoded = header.slice(prefix.length);
	const signature = config.encoding === "base64" ? decodeBase64(encoded) : fromHex(encoded);
	if (signature?.byteLength !== macLength(algorithm)) return fail("malformed-signature");

	let seconds: number | null = null;
	let content = body;
	if (config.timestampHeader) {
		const t = readHeader(headers, config.timestampHeader);
		seconds = t === null ? null : parseUnixSeconds(t);
		if (seconds === null) return fail("malformed-signature");
		content = withPrefix(`${t}.`, body);
	}

	const secretIndex = await matchHmac(algorithm, secrets.map(utf8), content, [signature]);
	if (secretIndex < 0) return fail("bad-signature");
	if (seconds !== null && !isFresh(seconds, now, config.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS)) {
		return fail("stale-timestamp");
	}
	return {
		ok: true,
		deliveryId: config.deliveryIdHeader ? readHeader(headers, config.deliveryIdHeader) : null,
		eventType: config.eventTypeHeader ? readHeader(headers, config.eventTypeHeader) : null,
		timestamp: seconds === null ? null : seconds * 1000,
		secretIndex,
	};
}
