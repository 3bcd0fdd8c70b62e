/** Turns a handler's error into text safe to store, log and show to a tenant's admins: redacted and bounded. */

/** Longest error text kept per handler. */
export const MAX_ERROR_CHARS = 500;

// Anything that looks like a credential is replaced, whatever message it turns up in.
const REDACTIONS: Array<[RegExp, string]> = [
	// Authorization header values and the like.
	[/\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+/gi, "$1 [redacted]"],
	// Edgeway API keys, Standard Webhooks secrets, common provider key shapes.
	[/\b(ew|whsec|sk|pk|rk|xox[abprs])[-_][A-Za-z0-9+/=_-]{6,}/g, "[redacted]"],
	// JWTs.
	[/\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, "[redacted]"],
	// user:password@ in URLs.
	[/(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s:@]+:[^/\s@]+@/gi, "$1[redacted]@"],
	// key=value pairs whose key names a secret (query strings, headers, config dumps).
	[
		/\b([\w-]*(?:secret|token|password|passwd|signature|api[-_]?key|authorization|cookie|sig)[\w-]*)(["']?\s*[:=]\s*["']?)[^\s"'&,;}]+/gi,
		"$1$2[redacted]",
	],
	// Long opaque strings (hex or base64 of 32+ characters) are more likely keys than prose.
	[/\b[A-Za-z0-9+/_-]{40,}={0,2}/g, "[redacted]"],
];

/** A one-line description of `err`: name and message, credentials redacted, at most {@link MAX_ERROR_CHARS}. */
export function errorText(err: unknown, max = MAX_ERROR_CHARS): string {
	let text: string;
	if (err instanceof Error) text = err.message ? `${err.name}: ${err.message}` : err.name;
	else if (typeof err === "string") text = err;
	else text = `non-error thrown (${typeof err})`;
	for (const [pattern, replacement] of REDACTIONS) text = text.replace(pattern, replacement);
	text = text.replace(/\s+/g, " ").trim();
	return truncate(text, max);
}

/** `err`'s message, or the thrown value as text: as it is, neither redacted nor bounded (see {@link errorText}). */
export function errorMessage(err: unknown): string {
	return err instanceof Error ? err.message : String(err);
}

/** Cuts `text` to `max` characters, marking the cut. */
export function truncate(text: string, max: number): string {
	return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
