/** GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body with the secret's UTF-8 bytes. */

import { fromHex } from "../../lib";
import { matchHmac, readHeader, utf8 } from "./bytes";
import { fail, type VerifyInput, type VerifyResult } from "./schema";

const SIGNATURE = /^sha256=([0-9a-fA-F]{64})$/;

export async function verifyGithub({ secrets, headers, body }: VerifyInput): Promise<VerifyResult> {
	const header = readHeader(headers, "x-hub-signature-256");
	if (header === null) return fail("missing-signature");
	const hex = SIGNATURE.exec(header)?.[1];
	const signature = hex ? fromHex(hex) : null;
	if (!signature) return fail("malformed-signature");

	const secretIndex = await matchHmac("sha256", secrets.map(utf8), body, [signature]);
	if (secretIndex < 0) return fail("bad-signature");
	return {
		ok: true,
		deliveryId: readHeader(headers, "x-github-delivery"),
		eventType: readHeader(headers, "x-github-event"),
		timestamp: null,
		secretIndex,
	};
}
