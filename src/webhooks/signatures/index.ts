/** Signature verification of incoming webhooks, per source, on the raw body, with secret rotation. */
import { decodeBase64 } from "./bytes";
import { verifyGenericHmac } from "./generic-hmac";
import { verifyGithub } from "./github";
import type { VerifyInput, VerifyResult, WebhookSource } from "./schema";
import { verifySlack } from "./slack";
import { parseStandardKey, STANDARD_SECRET_PREFIX, verifyStandard } from "./standard";
import { verifyStripe } from "./stripe";

export { DEFAULT_SIGNATURE_HEADER } from "./generic-hmac";
export {
	DEFAULT_TOLERANCE_SECONDS,
	type SourceConfig,
	SourceConfigSchema,
	type VerifyFailure,
	type VerifyInput,
	type VerifyResult,
	type VerifySuccess,
	type WebhookSource,
	WebhookSourceSchema,
} from "./schema";
export {
	generateStandardWebhookSecret,
	type SignStandardWebhookOptions,
	STANDARD_PUBLIC_KEY_PREFIX,
	STANDARD_SECRET_PREFIX,
	signStandardWebhook,
} from "./standard";

/**
 * Verifies one delivery against the endpoint's active secrets (any may match; `secretIndex` says
 * which). The signature is checked on `body` as received, compared in constant time, and only then
 * is the body read (as JSON, where the source puts ids there). Never throws for anything the sender
 * controls; throws only when called without a secret.
 */
export async function verifyWebhook(input: VerifyInput): Promise<VerifyResult> {
	if (input.secrets.length === 0) throw new RangeError("verifyWebhook: at least one active secret is required");
	switch (input.source) {
		case "github":
			return verifyGithub(input);
		case "stripe":
			return verifyStripe(input);
		case "slack":
			return verifySlack(input);
		case "standard":
			return verifyStandard(input);
		case "hmac":
			return verifyGenericHmac(input);
		default: {
			const unknown: never = input.source;
			throw new TypeError(`verifyWebhook: unknown source ${String(unknown)}`);
		}
	}
}

/**
 * Whether `secret` can be used for `source`, for checking secrets when an endpoint is registered.
 * Standard Webhooks takes a `whsec_` secret of 24–64 bytes or a `whpk_` Ed25519 public key; the other
 * sources take the sender's secret as text (no surrounding whitespace, at most 1024 characters).
 */
export function isValidWebhookSecret(source: WebhookSource, secret: string): boolean {
	if (secret.length === 0 || secret.length > 1024 || secret.trim() !== secret) return false;
	if (source !== "standard") return true;
	if (secret.startsWith(STANDARD_SECRET_PREFIX)) {
		const bytes = decodeBase64(secret.slice(STANDARD_SECRET_PREFIX.length))?.byteLength ?? 0;
		return bytes >= 24 && bytes <= 64;
	}
	return parseStandardKey(secret)?.kind === "ed25519";
}
