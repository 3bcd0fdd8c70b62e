/**
 * The built-in detectors: secrets and API keys, card numbers, e-mail addresses and phone numbers.
 *
 * Every detector is a global regular expression whose quantifiers are all bounded and none sits inside
 * a repeated group, so a scan is linear in the text with a small constant, and a match is decided by at
 * most a known number of characters from its start (the detector's `reach`). Tokens of open-ended
 * length (API keys, JWTs, PEM bodies) are matched by a bounded, recognisable head and then extended
 * over the run of token characters that follows it (the `tail`): that is what lets a stream redact a
 * 2 KB key whole while holding back only a bounded look-behind.
 */
import type { GuardrailKind } from "./schema";

/** One way a check finds matches: a bounded regular expression and what a stream needs to know of it. */
export interface Detector {
	/** Global; every quantifier bounded; no repeated group holding a quantifier or an alternation. */
	readonly re: RegExp;
	/** Most characters read from a match's start to decide it (match plus look-ahead); null for custom patterns. */
	readonly reach: number | null;
	/** Of a raw match, the length accepted (a prefix of it), or 0 to reject it. */
	readonly accept?: (match: string) => number;
	/** Sticky run of the characters that extend a match when they follow it (tokens of no fixed length). */
	readonly tail?: RegExp;
	/**
	 * Every character a match (before its tail) can hold, as a one-character test: a stream guard knows
	 * that no match can run across any other character, so it holds back only the trailing run of these.
	 * Absent for custom patterns, which are held back `lookBehind` characters.
	 */
	readonly chars?: RegExp;
	/**
	 * A character every match holds within its first `within + 1` characters (an e-mail's `@`), so a
	 * search need not start before `within` characters ahead of the next one, and a text without it has
	 * no match. Skips the backtracking a pattern with a long leading run does at every other position.
	 */
	readonly anchor?: { char: string; within: number };
}

/** API keys with a recognisable prefix. Heads are bounded; the tail takes the rest of the token. */
const SECRET_TOKENS: Detector = {
	re: new RegExp(
		`(?<![A-Za-z0-9_-])(?:${[
			"sk-ant-[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_-]{32}", // Anthropic (sk-ant-api03-…)
			"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32}", // OpenAI project, service-account and admin keys
			"sk-[A-Za-z0-9]{32}", // OpenAI legacy keys
			"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", // AWS access key ids (exactly 20 characters)
			"gh[pousr]_[A-Za-z0-9]{36}", // GitHub tokens
			"github_pat_[A-Za-z0-9_]{40}", // GitHub fine-grained tokens
			"xox[abpr]-[A-Za-z0-9-]{10}", // Slack
			"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16}", // Stripe
			"AIza[A-Za-z0-9_-]{35}", // Google API keys
			"ew_[a-z0-9]{12}_[0-9a-f]{64}", // Edgeway API keys (src/auth/api-keys.ts)
		].join("|")})`,
		"g",
	),
	reach: 81,
	tail: /[A-Za-z0-9_-]*/y,
	chars: /[A-Za-z0-9_-]/,
};

/**
 * A JWT: header and the start of the payload; the tail takes the rest of the payload and the signature
 * (and a full stop right after it, as the tail cannot tell one from a segment separator).
 */
const JWT: Detector = {
	re: /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,200}\.eyJ[A-Za-z0-9_-]{5}/g,
	reach: 213,
	tail: /[A-Za-z0-9_.-]*/y,
	chars: /[A-Za-z0-9_.-]/,
};

/**
 * A PEM private key: the header line, then the base64 body (with its line breaks, indentation and
 * JSON-escaped `\n`s) up to the `-----END` line, which is not secret and stays.
 */
const PRIVATE_KEY: Detector = {
	re: /-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----/g,
	reach: 68,
	tail: /[A-Za-z0-9+/=\s\\]*/y,
	chars: /[A-Z0-9 -]/,
};

/** The longest prefix of a digit run, cut at its end or before a non-digit, with min..max digits passing `valid`. */
function longestValidPrefix(run: string, min: number, max: number, valid: (digits: string) => boolean): number {
	for (let end = run.length; end > 0; end--) {
		const atBoundary = end === run.length || (!isDigit(run, end) && isDigit(run, end - 1));
		if (!atBoundary) continue;
		const digits = run.slice(0, end).replace(/[^0-9]/g, "");
		if (digits.length < min) return 0;
		if (digits.length <= max && valid(digits)) return end;
	}
	return 0;
}

function isDigit(s: string, i: number): boolean {
	const c = s.charCodeAt(i);
	return c >= 48 && c <= 57;
}

function luhnValid(digits: string): boolean {
	let sum = 0;
	for (let i = 0; i < digits.length; i++) {
		let d = digits.charCodeAt(digits.length - 1 - i) - 48;
		if (i % 2 === 1) {
			d *= 2;
			if (d > 9) d -= 9;
		}
		sum += d;
	}
	return sum % 10 === 0;
}

/**
 * 13–19 digits, optionally grouped by spaces or dashes, Luhn-valid and not one repeated digit. A run
 * with more digits is cut before a separator ("4111 1111 1111 1111 2024" is a card and a year); an
 * ungrouped run of 20 or more digits is not a card. About one in ten random 13–19-digit numbers
 * passes Luhn, so long order ids can be caught: the price of not missing a card.
 */
const CARD: Detector = {
	re: /(?<![0-9])[0-9][0-9 -]{11,35}[0-9](?![0-9])/g,
	reach: 38,
	chars: /[0-9 -]/,
	accept: (run) => longestValidPrefix(run, 13, 19, (d) => luhnValid(d) && d !== (d[0] ?? "").repeat(d.length)),
};

/** `name@2x.png` is an image, not an address. */
const FILE_SUFFIXES = new Set(["png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico"]);

/** A local part of up to 64 characters, a domain of up to 160, and a letters-only top-level domain. */
const EMAIL: Detector = {
	re: /[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,160}\.[A-Za-z]{2,24}/g,
	reach: 251,
	chars: /[A-Za-z0-9._%+@-]/,
	// The local part is at most 64 characters, none of them `@`: a match starts at most 64 before its `@`.
	anchor: { char: "@", within: 64 },
	accept: (m) => (FILE_SUFFIXES.has(m.slice(m.lastIndexOf(".") + 1).toLowerCase()) ? 0 : m.length),
};

/**
 * Phone numbers with at least 10 digits. Trade-off: a bare digit run is never taken for a phone number
 * unless it starts with `+` (E.164), so order ids, timestamps and amounts pass; the price is that an
 * unformatted national number (`4155552671`) passes too. National numbers are recognised by their
 * written shape: `(415) 555-2671`, `415-555-2671` / `415.555.2671` / `415 555 2671`, trunk-0 forms
 * such as `020 7946 0958` or `07700 900123`, and `01 23 45 67 89`.
 */
const PHONE_INTERNATIONAL: Detector = {
	re: /(?<![\w+])\+[1-9][0-9 ().-]{8,22}[0-9](?![0-9])/g,
	reach: 26,
	chars: /[0-9 ().+-]/,
	accept: (run) => longestValidPrefix(run, 10, 15, () => true),
};

const PHONE_NATIONAL: Detector = {
	re: new RegExp(
		`(?<![\\w+.-])(?:${[
			"\\([0-9]{3}\\) ?[0-9]{3}[-. ][0-9]{4}",
			"[0-9]{3}([-. ])[0-9]{3}\\1[0-9]{4}",
			"0[0-9]{1,4}[ -][0-9]{3,4}[ -]?[0-9]{3,4}",
			"0[0-9]([ .])[0-9]{2}\\2[0-9]{2}\\2[0-9]{2}\\2[0-9]{2}",
		].join("|")})(?![\\w-])`,
		"g",
	),
	reach: 16,
	chars: /[0-9 ().-]/,
	accept: (m) => longestValidPrefix(m, 10, 13, () => true),
};

/** The detectors of each built-in check. */
export const BUILT_INS: Record<Exclude<GuardrailKind, "pattern">, readonly Detector[]> = {
	secrets: [SECRET_TOKENS, JWT, PRIVATE_KEY],
	"card-numbers": [CARD],
	emails: [EMAIL],
	phones: [PHONE_INTERNATIONAL, PHONE_NATIONAL],
};
