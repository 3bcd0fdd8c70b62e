/** Types and the per-endpoint options schema of incoming-webhook signature verification. */
import { z } from "zod";

/** Default replay window for sources whose signatures carry a timestamp (Stripe, Slack and Standard Webhooks use 5 minutes). */
export const DEFAULT_TOLERANCE_SECONDS = 300;

export const WebhookSourceSchema = z.enum(["github", "stripe", "slack", "standard", "hmac"]);
export type WebhookSource = z.infer<typeof WebhookSourceSchema>;

// RFC 9110 token: what an HTTP field name may be made of.
const HeaderNameSchema = z
	.string()
	.min(1)
	.max(64)
	.regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, "not a valid HTTP header name");

/**
 * Per-endpoint verification options. Every field is optional; defaults are applied at verification
 * time so that a stored config holds only what the tenant chose. The header, algorithm, encoding and
 * prefix fields apply to the generic `hmac` source only.
 */
export const SourceConfigSchema = z.strictObject({
	/** Accepted distance between the signed timestamp and now, in either direction (default 300). */
	toleranceSeconds: z.number().int().min(1).max(3600).optional(),
	/** Header carrying the signature (default `X-Signature`). */
	signatureHeader: HeaderNameSchema.optional(),
	/** HMAC hash (default `sha256`). */
	algorithm: z.enum(["sha256", "sha512"]).optional(),
	/** How the MAC is written in the header (default `hex`; `base64` accepts the URL-safe alphabet too). */
	encoding: z.enum(["hex", "base64"]).optional(),
	/** Literal text before the MAC in the header, e.g. `sha256=`. */
	signaturePrefix: z.string().min(1).max(32).optional(),
	/** Header with the unix timestamp in seconds; when set the signed content is `${timestamp}.${body}`. */
	timestampHeader: HeaderNameSchema.optional(),
	/** Header with the sender's delivery id (used for de-duplication). */
	deliveryIdHeader: HeaderNameSchema.optional(),
	/** Header with the sender's event type. */
	eventTypeHeader: HeaderNameSchema.optional(),
});
export type SourceConfig = z.infer<typeof SourceConfigSchema>;

export interface VerifyInput {
	source: WebhookSource;
	config: SourceConfig;
	/** The endpoint's active secrets, current first: one, or two during a rotation. */
	secrets: string[];
	headers: Headers;
	/** The request body exactly as received. */
	body: Uint8Array;
	/** Current time, ms since the epoch. */
	now: number;
}

/**
 * Why a delivery was refused. `stale-timestamp` is only reported for an authentic signature, so it
 * means a replay or clock skew, never a forgery.
 */
export type VerifyFailure = "missing-signature" | "malformed-signature" | "bad-signature" | "stale-timestamp";

export type VerifyResult =
	| {
			ok: true;
			deliveryId: string | null;
			eventType: string | null;
			/** The signed timestamp in ms, for sources that sign one. */
			timestamp: number | null;
			/** Which of `secrets` matched. */
			secretIndex: number;
			/** Slack `url_verification`: the value to answer with. */
			challenge?: string;
	  }
	| { ok: false; reason: VerifyFailure };

export type VerifySuccess = Extract<VerifyResult, { ok: true }>;

/** Shorthand for the failure branch. */
export function fail(reason: VerifyFailure): VerifyResult {
	return { ok: false, reason };
}
