/**
 * Slack: `X-Slack-Signature: v0=<hex>` over `v0:${X-Slack-Request-Timestamp}:${body}`. Bodies may be
 * JSON (Events API) or form-encoded (slash commands, interactivity); ids are read from JSON only.
 */

import { fromHex, isRecord } from "../../lib";
import {
	isFresh,
	matchHmac,
	parseUnixSeconds,
	readHeader,
	readJsonObject,
	stringField,
	utf8,
	withPrefix,
} from "./bytes";
import { DEFAULT_TOLERANCE_SECONDS, fail, type VerifyInput, type VerifyResult } from "./schema";

const SIGNATURE = /^v0=([0-9a-fA-F]{64})$/;

export async function verifySlack({ config, secrets, headers, body, now }: VerifyInput): Promise<VerifyResult> {
	const header = readHeader(headers, "x-slack-signature");
	if (header === null) return fail("missing-signature");
	const hex = SIGNATURE.exec(header)?.[1];
	const signature = hex ? fromHex(hex) : null;
	const t = readHeader(headers, "x-slack-request-timestamp");
	const seconds = t === null ? null : parseUnixSeconds(t);
	if (!signature || seconds === null) return fail("malformed-signature");

	const secretIndex = await matchHmac("sha256", secrets.map(utf8), withPrefix(`v0:${t}:`, body), [signature]);
	if (secretIndex < 0) return fail("bad-signature");
	if (!isFresh(seconds, now, config.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS)) return fail("stale-timestamp");

	const payload = readJsonObject(body);
	const event = isRecord(payload?.event) ? payload.event : null;
	const challenge = payload?.type === "url_verification" ? stringField(payload, "challenge") : null;
	return {
		ok: true,
		deliveryId: stringField(payload, "event_id"),
		eventType: stringField(event, "type") ?? stringField(payload, "type"),
		timestamp: seconds * 1000,
		secretIndex,
		...(challenge === null ? {} : { challenge }),
	};
}
