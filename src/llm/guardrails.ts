/**
 * Content guardrails for the LLM plane: detectors for secrets and API keys, card numbers, e-mail
 * addresses, phone numbers and custom patterns, each configured to block or redact, applied to chat
 * requests, embeddings inputs, completions and streamed output.
 *
 * Every detector is a global regular expression whose quantifiers are all bounded and none sits inside
 * a repeated group, so a scan is linear in the text with a small constant, and a match is decided by at
 * most a known number of characters from its start (the detector's `reach`). Tokens of open-ended
 * length (API keys, JWTs, PEM bodies) are matched by a bounded, recognisable head and then extended
 * over the run of token characters that follows it (the `tail`): that is what lets a stream redact a
 * 2 KB key whole while holding back only a bounded look-behind.
 *
 * The matches of all checks are redacted as one union: overlapping matches become a single
 * `[REDACTED:<check>]` named after the match that starts first (ties: the earlier check). Matches of
 * block checks are redacted too, so no returned text ever holds them. Findings carry counts, never text.
 */
import { exceedsJsonDepth } from "../lib";
import type { GuardrailCheck, Guardrails } from "./config";
import type { ChatCompletion, ChatMessage, ChatRequest, EmbeddingsRequest, ToolCall } from "./types";

/** What a check found: how many matches, never the matched text. */
export interface Finding {
	/** The check's kind, a pattern check's name, or `max-prompt-size`. */
	check: string;
	action: "block" | "redact";
	count: number;
}

export interface ScanResult {
	/** The text with every match replaced by `[REDACTED:<check>]`. */
	text: string;
	/** One entry per check that matched, in check order. */
	findings: Finding[];
	/** The first block check (in check order) that matched, or null. */
	blocked: Finding | null;
}

interface Detector {
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
}

export interface CompiledCheck {
	readonly name: string;
	readonly action: "block" | "redact";
	readonly detectors: readonly Detector[];
}

export interface CompiledGuardrails {
	readonly checks: readonly CompiledCheck[];
	/** The smallest `lookBehind` a {@link StreamGuard} over these checks accepts (the built-ins' longest reach, less one). */
	readonly minLookBehind: number;
}

// ---------------------------------------------------------------------------------------------------
// Detectors

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

const BUILT_INS: Record<Exclude<GuardrailCheck["kind"], "pattern">, readonly Detector[]> = {
	secrets: [SECRET_TOKENS, JWT, PRIVATE_KEY],
	"card-numbers": [CARD],
	emails: [EMAIL],
	phones: [PHONE_INTERNATIONAL, PHONE_NATIONAL],
};

// ---------------------------------------------------------------------------------------------------
// Compiling checks

/**
 * Why a custom pattern is refused, or null. A pattern must be safe on any input: every quantifier
 * bounded (`{1,64}`, not `+`, `*` or `{1,}`), and no repeated group holding a quantifier or an
 * alternation (`(a{1,5}){1,5}`, `(a|ab){2,9}`), the shapes whose backtracking blows up. The source is
 * read atom by atom; escapes and character classes are skipped whole.
 */
export function patternProblem(source: string): string | null {
	const frames: Array<{ inner: boolean }> = [{ inner: false }];
	let closedGroup: { inner: boolean } | null = null;
	let i = 0;
	while (i < source.length) {
		const top = frames[frames.length - 1] as { inner: boolean };
		const ch = source[i];
		const quantifier = quantifierAt(source, i);
		if (quantifier) {
			if (quantifier.max === Number.POSITIVE_INFINITY) return "unbounded quantifier: use a bound such as {1,64}";
			if (quantifier.max > 1 && closedGroup?.inner) return "a repeated group holds a quantifier or an alternation";
			top.inner = true;
			i += quantifier.length + (source[i + quantifier.length] === "?" ? 1 : 0);
			closedGroup = null;
			continue;
		}
		closedGroup = null;
		if (ch === "\\") i += 2;
		else if (ch === "[") i = classEnd(source, i);
		else if (ch === "(") {
			frames.push({ inner: false });
			i += groupPrefixLength(source, i);
		} else if (ch === ")") {
			const group = frames.length > 1 ? (frames.pop() as { inner: boolean }) : { inner: false };
			const parent = frames[frames.length - 1] as { inner: boolean };
			parent.inner ||= group.inner;
			closedGroup = group;
			i++;
		} else {
			if (ch === "|") top.inner = true;
			i++;
		}
	}
	return null;
}

function quantifierAt(source: string, i: number): { max: number; length: number } | null {
	const ch = source[i];
	if (ch === "*" || ch === "+") return { max: Number.POSITIVE_INFINITY, length: 1 };
	if (ch === "?") return { max: 1, length: 1 };
	if (ch !== "{") return null;
	const m = /^\{([0-9]{1,9})(,([0-9]{0,9}))?\}/.exec(source.slice(i, i + 22));
	if (!m) return null;
	const max = m[2] === undefined ? Number(m[1]) : m[3] ? Number(m[3]) : Number.POSITIVE_INFINITY;
	return { max, length: m[0].length };
}

/** Index just past the `]` closing the class opened at `i` (in JavaScript a `]` right after `[` closes it). */
function classEnd(source: string, i: number): number {
	let j = i + 1;
	while (j < source.length && source[j] !== "]") j += source[j] === "\\" ? 2 : 1;
	return j + 1;
}

/** Length of `(`, `(?:`, `(?=`, `(?!`, `(?<=`, `(?<!`, `(?<name>` or `(?i:` at `i`. */
function groupPrefixLength(source: string, i: number): number {
	if (source[i + 1] !== "?") return 1;
	const kind = source[i + 2];
	if (kind === ":" || kind === "=" || kind === "!") return 3;
	if (kind === "<") {
		const next = source[i + 3];
		if (next === "=" || next === "!") return 4;
		return Math.max(source.indexOf(">", i), i) + 1 - i;
	}
	return Math.max(source.indexOf(":", i), i) + 1 - i;
}

function compileCheck(check: GuardrailCheck): CompiledCheck {
	if (check.kind !== "pattern") return { name: check.kind, action: check.action, detectors: BUILT_INS[check.kind] };
	if (!check.pattern || !check.name) throw new Error("A pattern guardrail needs a pattern and a name");
	const problem = patternProblem(check.pattern);
	if (problem) throw new Error(`Guardrail pattern ${check.name} is refused: ${problem}`);
	return { name: check.name, action: check.action, detectors: [{ re: new RegExp(check.pattern, "g"), reach: null }] };
}

const compiled = new WeakMap<readonly GuardrailCheck[], CompiledGuardrails>();

/**
 * Compiles a list of checks (memoised per array: the parsed config keeps its arrays, so each is
 * compiled once per isolate). Throws on a custom pattern that {@link patternProblem} refuses.
 */
export function compileGuardrails(checks: readonly GuardrailCheck[]): CompiledGuardrails {
	let g = compiled.get(checks);
	if (!g) {
		const list = checks.map(compileCheck);
		let reach = 2;
		for (const c of list) for (const d of c.detectors) reach = Math.max(reach, d.reach ?? 0);
		g = { checks: list, minLookBehind: reach - 1 };
		compiled.set(checks, g);
	}
	return g;
}

// ---------------------------------------------------------------------------------------------------
// Matching and redaction

/** A match in absolute stream positions, `check` being its check's index. */
interface Span {
	start: number;
	end: number;
	check: number;
}

const byStart = (a: Span, b: Span): number => a.start - b.start || a.check - b.check;

/** The first accepted match of `d` in `text` starting in [from, lastStart], or null. */
function find(d: Detector, text: string, from: number, lastStart: number): { start: number; end: number } | null {
	let pos = from;
	while (pos <= lastStart) {
		d.re.lastIndex = pos;
		const m = d.re.exec(text);
		if (!m || m.index > lastStart) return null;
		// An empty match (possible in a custom pattern) is skipped, never redacted.
		const length = m[0] === "" ? 0 : d.accept ? d.accept(m[0]) : m[0].length;
		if (length > 0) return { start: m.index, end: m.index + length };
		pos = m.index + 1;
	}
	return null;
}

/** Where the run of tail characters starting at `at` ends. */
function tailEnd(tail: RegExp, text: string, at: number): number {
	tail.lastIndex = at;
	return at + (tail.exec(text)?.[0].length ?? 0);
}

/**
 * Appends to `spans` the matches of detector `d` (of check `check`) in `text` (which starts at absolute
 * position `base`), searching from `from` and taking only matches that start at or before `lastStart`
 * (both relative to `text`). Returns where the next search starts (relative), how many matched, and
 * the absolute start of the last match when its tail ran into the end of `text` and may go on (only
 * when not `final`), else null.
 */
function matchesOf(
	d: Detector,
	check: number,
	text: string,
	base: number,
	from: number,
	lastStart: number,
	final: boolean,
	spans: Span[],
): { next: number; count: number; open: number | null } {
	let pos = from;
	let count = 0;
	for (let m = find(d, text, pos, lastStart); m; m = find(d, text, pos, lastStart)) {
		count++;
		const end = d.tail ? tailEnd(d.tail, text, m.end) : m.end;
		spans.push({ start: base + m.start, end: base + end, check });
		pos = end;
		if (d.tail && !final && end === text.length) return { next: end, count, open: base + m.start };
	}
	return { next: Math.max(pos, lastStart + 1), count, open: null };
}

/**
 * Writes redacted text. It remembers where its last redaction ended, so a later span overlapping it
 * (found in a later chunk of a stream) extends that redaction instead of adding a second placeholder.
 */
class Redactor {
	readonly #checks: readonly CompiledCheck[];
	#until = 0;

	constructor(checks: readonly CompiledCheck[]) {
		this.#checks = checks;
	}

	/**
	 * The redacted form of the raw text [from, to) (absolute positions; `raw` starts at `base`), given
	 * every span starting before `to`, sorted. A redaction may run past `to`: `reached` says how far
	 * the returned text covers.
	 */
	emit(raw: string, base: number, from: number, to: number, spans: readonly Span[]): { text: string; reached: number } {
		let out = "";
		let pos = from;
		for (const s of spans) {
			if (s.start < this.#until) {
				this.#until = Math.max(this.#until, s.end);
			} else {
				out += `${raw.slice(pos - base, s.start - base)}[REDACTED:${this.#checks[s.check]?.name}]`;
				this.#until = s.end;
			}
			pos = Math.max(pos, this.#until);
		}
		if (to > pos) {
			out += raw.slice(pos - base, to - base);
			pos = to;
		}
		return { text: out, reached: pos };
	}
}

function zeros(g: CompiledGuardrails): number[] {
	return g.checks.map(() => 0);
}

function outcome(g: CompiledGuardrails, counts: readonly number[]): { findings: Finding[]; blocked: Finding | null } {
	const findings: Finding[] = [];
	g.checks.forEach((c, i) => {
		const count = counts[i] ?? 0;
		if (count > 0) findings.push({ check: c.name, action: c.action, count });
	});
	return { findings, blocked: findings.find((f) => f.action === "block") ?? null };
}

/** Redacts `text` whole, adding each check's match count to `counts`. Returns `text` itself when nothing matched. */
function redactInto(g: CompiledGuardrails, text: string, counts: number[]): string {
	const spans: Span[] = [];
	g.checks.forEach((c, i) => {
		for (const d of c.detectors)
			counts[i] = (counts[i] ?? 0) + matchesOf(d, i, text, 0, 0, text.length, true, spans).count;
	});
	if (spans.length === 0) return text;
	spans.sort(byStart);
	return new Redactor(g.checks).emit(text, 0, 0, text.length, spans).text;
}

/** Scans one text with compiled checks: the redacted text, what matched, and whether a block check did. */
export function scanText(g: CompiledGuardrails, text: string): ScanResult {
	const counts = zeros(g);
	const redacted = redactInto(g, text, counts);
	return { text: redacted, ...outcome(g, counts) };
}

// ---------------------------------------------------------------------------------------------------
// Requests and completions

/** Scans several texts of one request or completion; findings add up across them. */
class Scanner {
	readonly #g: CompiledGuardrails;
	readonly #counts: number[];

	constructor(g: CompiledGuardrails) {
		this.#g = g;
		this.#counts = zeros(g);
	}

	text(text: string): string {
		return redactInto(this.#g, text, this.#counts);
	}

	/**
	 * Tool-call arguments are JSON: their string values are scanned decoded (a `\u0040` is an `@`) and
	 * the JSON re-encoded when one changed, so it stays valid. Text that is not JSON, or nests deeper
	 * than MAX_JSON_DEPTH, is scanned raw.
	 */
	arguments(args: string): string {
		// The reviver below walks the parsed value recursively: arguments nested too deep are scanned raw.
		if (exceedsJsonDepth(args)) return this.text(args);
		const counts = zeros(this.#g);
		let changed = false;
		try {
			const value: unknown = JSON.parse(args, (_key, v: unknown) => {
				if (typeof v !== "string") return v;
				const redacted = redactInto(this.#g, v, counts);
				changed ||= redacted !== v;
				return redacted;
			});
			const out = changed ? JSON.stringify(value) : args;
			counts.forEach((n, i) => {
				this.#counts[i] = (this.#counts[i] ?? 0) + n;
			});
			return out;
		} catch {
			return this.text(args);
		}
	}

	parts<P extends { type: string; text?: string }>(parts: P[]): P[] {
		let changed = false;
		const out = parts.map((p) => {
			if (p.type !== "text" || typeof p.text !== "string") return p;
			const text = this.text(p.text);
			if (text === p.text) return p;
			changed = true;
			return { ...p, text };
		});
		return changed ? out : parts;
	}

	content<P extends { type: string; text?: string }>(content: string | P[]): string | P[] {
		return typeof content === "string" ? this.text(content) : this.parts(content);
	}

	toolCalls(calls: ToolCall[]): ToolCall[] {
		let changed = false;
		const out = calls.map((c) => {
			const args = this.arguments(c.function.arguments);
			if (args === c.function.arguments) return c;
			changed = true;
			return { ...c, function: { ...c.function, arguments: args } };
		});
		return changed ? out : calls;
	}

	result(): { findings: Finding[]; blocked: Finding | null } {
		return outcome(this.#g, this.#counts);
	}
}

function scanMessage(m: ChatMessage, s: Scanner): ChatMessage {
	switch (m.role) {
		case "assistant": {
			const content = m.content == null ? m.content : s.content(m.content);
			const toolCalls = m.tool_calls && s.toolCalls(m.tool_calls);
			return content === m.content && toolCalls === m.tool_calls ? m : { ...m, content, tool_calls: toolCalls };
		}
		case "user": {
			const content = s.content(m.content);
			return content === m.content ? m : { ...m, content };
		}
		default: {
			const content = s.content(m.content);
			return content === m.content ? m : { ...m, content };
		}
	}
}

/** Characters of message text in a request: contents, text parts and tool-call arguments. */
function promptChars(messages: readonly ChatMessage[]): number {
	let n = 0;
	for (const m of messages) {
		if (typeof m.content === "string") n += m.content.length;
		else for (const p of m.content ?? []) if (p.type === "text") n += p.text.length;
		if (m.role === "assistant") for (const c of m.tool_calls ?? []) n += c.function.arguments.length;
	}
	return n;
}

function sizeBlock(): { findings: Finding[]; blocked: Finding } {
	const blocked: Finding = { check: "max-prompt-size", action: "block", count: 1 };
	return { findings: [blocked], blocked };
}

/**
 * Applies the input guardrails to a chat request: the prompt size first (over `maxPromptChars` →
 * blocked as `max-prompt-size`, nothing scanned), then every message's text, text parts and tool-call
 * arguments. Returns a redacted copy; the input is never mutated, and is returned itself when nothing
 * changed. The caller refuses the request when `blocked` is set.
 */
export function checkChatInput(
	request: ChatRequest,
	guardrails: Guardrails,
): { request: ChatRequest; findings: Finding[]; blocked: Finding | null } {
	if (guardrails.maxPromptChars > 0 && promptChars(request.messages) > guardrails.maxPromptChars) {
		return { request, ...sizeBlock() };
	}
	const s = new Scanner(compileGuardrails(guardrails.input));
	const messages = request.messages.map((m) => scanMessage(m, s));
	const changed = messages.some((m, i) => m !== request.messages[i]);
	return { request: changed ? { ...request, messages } : request, ...s.result() };
}

export type EmbeddingsInput = EmbeddingsRequest["input"];

/** The request schema makes an input list homogeneous, so its first element tells its type. */
function isTextList(input: Exclude<EmbeddingsInput, string>): input is string[] {
	return typeof input[0] === "string";
}

/**
 * Applies the input guardrails to an embeddings input: size (total characters of its strings) and
 * scan, as for chat. Token-id inputs (`number[]`, `number[][]`) carry no text and pass unchanged.
 */
export function checkEmbeddingsInput(
	input: EmbeddingsInput,
	guardrails: Guardrails,
): { input: EmbeddingsInput; findings: Finding[]; blocked: Finding | null } {
	if (typeof input !== "string" && !isTextList(input)) return { input, findings: [], blocked: null };
	const texts = typeof input === "string" ? [input] : input;
	let chars = 0;
	for (const t of texts) chars += t.length;
	if (guardrails.maxPromptChars > 0 && chars > guardrails.maxPromptChars) return { input, ...sizeBlock() };
	const s = new Scanner(compileGuardrails(guardrails.input));
	const scanned = texts.map((t) => s.text(t));
	const changed = scanned.some((t, i) => t !== texts[i]);
	const out = !changed ? input : typeof input === "string" ? (scanned[0] ?? "") : scanned;
	return { input: out, ...s.result() };
}

/**
 * Applies output checks to a completion: every choice's content and tool-call arguments. Returns a
 * redacted copy (the input itself when nothing changed); the caller withholds it when `blocked` is set.
 */
export function checkChatOutput(
	completion: ChatCompletion,
	checks: readonly GuardrailCheck[],
): { completion: ChatCompletion; findings: Finding[]; blocked: Finding | null } {
	const s = new Scanner(compileGuardrails(checks));
	let changed = false;
	const choices = completion.choices.map((c) => {
		const content = c.message.content === null ? null : s.text(c.message.content);
		const toolCalls = c.message.tool_calls && s.toolCalls(c.message.tool_calls);
		if (content === c.message.content && toolCalls === c.message.tool_calls) return c;
		changed = true;
		return { ...c, message: { ...c.message, content, tool_calls: toolCalls } };
	});
	return { completion: changed ? { ...completion, choices } : completion, ...s.result() };
}

// ---------------------------------------------------------------------------------------------------
// Streams

export const DEFAULT_LOOK_BEHIND = 256;
/** The most a stream guard may be asked to hold back. */
export const MAX_LOOK_BEHIND = 65_536;
/**
 * Characters of already emitted text a stream guard keeps before its unemitted text, for look-behind
 * assertions: the built-ins look one character back; a custom pattern's look-behind sees at most this.
 */
export const STREAM_CONTEXT_CHARS = 32;

export interface StreamGuardOptions {
	/** Characters a custom pattern holds back (default {@link DEFAULT_LOOK_BEHIND}); ≥ the checks' `minLookBehind`. */
	lookBehind?: number;
}

export interface StreamStep {
	/** Text safe to send on: it can no longer be part of a match, and is redacted. */
	emit: string;
	/** Set once a block check has matched; nothing more is emitted after it. */
	blocked: Finding | null;
	/** Matches settled during this call (not cumulative). */
	findings: Finding[];
}

/**
 * Scans streamed text (one stream of content, or of one tool call's arguments) as it arrives.
 *
 * Guarantee, whatever the chunking: every match {@link scanText} would find in the whole stream is
 * found, provided it is decided within `lookBehind + 1` characters of its start (the match plus one
 * character of look-ahead). Every built-in detector is (their bounded heads reach at most
 * `minLookBehind + 1`, and their open-ended tails are followed across chunks without limit); a custom
 * pattern must keep its matches to `lookBehind` characters. Under that condition:
 *  - unblocked, the concatenation of every `emit` equals `scanText` of the whole stream;
 *  - a block is reported on the call that settles the match (once `lookBehind + 1` characters from its
 *    start have arrived, fewer for the built-ins, or at `end()`); the text emitted before it is a prefix
 *    of the redacted stream that holds nothing at or after the blocked match's start except, at most, a
 *    placeholder of a redaction that overlaps it.
 * A match is settled once no further text can change it; text is emitted once every match that could
 * touch it is settled. A built-in detector says which characters its matches hold, and no match runs
 * across any other: for it, only the trailing run of those characters is held back (the last word, or
 * a run of digits and spaces; at most its reach). A custom pattern holds back the last `lookBehind`
 * characters. A client sees content that much later; the route sends headers and the role chunk at
 * once. A redaction that runs past that point is emitted whole as its placeholder and later overlapping
 * matches extend it silently, so no redaction is applied twice and the text emitted so far is always a
 * prefix of the redacted stream.
 * Streamed tool-call arguments are scanned as raw JSON text: a value spelt with `\u` escapes is not
 * decoded, unlike in {@link checkChatOutput}.
 *
 * Memory: between calls the guard keeps at most `lookBehind + STREAM_CONTEXT_CHARS` characters (plus,
 * during a call, the chunk being pushed), and settled matches not yet emitted.
 */
export class StreamGuard {
	readonly #g: CompiledGuardrails;
	readonly #lookBehind: number;
	readonly #detectors: Array<{ d: Detector; check: number }> = [];
	/** Per detector: where its next search starts (absolute). */
	readonly #next: number[];
	/** Per detector: a match whose tail reached the end of the buffer and may go on. */
	readonly #open: Array<{ start: number; from: number } | null>;
	readonly #redactor: Redactor;
	/** Raw text from absolute position #base: a little emitted context, then what is held back. */
	#buf = "";
	#base = 0;
	#emitted = 0;
	/** Settled spans not yet emitted. */
	#queue: Span[] = [];
	#blocked: Finding | null = null;
	#ended = false;

	constructor(g: CompiledGuardrails, options: StreamGuardOptions = {}) {
		const lookBehind = options.lookBehind ?? DEFAULT_LOOK_BEHIND;
		if (!Number.isInteger(lookBehind) || lookBehind < g.minLookBehind || lookBehind > MAX_LOOK_BEHIND) {
			throw new RangeError(`lookBehind must be an integer in [${g.minLookBehind}, ${MAX_LOOK_BEHIND}]`);
		}
		this.#g = g;
		this.#lookBehind = lookBehind;
		g.checks.forEach((c, check) => {
			for (const d of c.detectors) this.#detectors.push({ d, check });
		});
		this.#next = this.#detectors.map(() => 0);
		this.#open = this.#detectors.map(() => null);
		this.#redactor = new Redactor(g.checks);
	}

	/** Characters currently retained (at most `lookBehind + STREAM_CONTEXT_CHARS` between calls). */
	get held(): number {
		return this.#buf.length;
	}

	/** Takes the next piece of the stream; returns what may be sent on now. */
	push(text: string): StreamStep {
		if (this.#ended) throw new Error("StreamGuard: push after end");
		if (this.#blocked) return { emit: "", blocked: this.#blocked, findings: [] };
		this.#buf += text;
		return this.#step(false);
	}

	/** Ends the stream: settles and returns everything still held. */
	end(): StreamStep {
		if (this.#ended) throw new Error("StreamGuard: end called twice");
		this.#ended = true;
		if (this.#blocked) return { emit: "", blocked: this.#blocked, findings: [] };
		return this.#step(true);
	}

	/**
	 * The last start (relative to the buffer) at which a match of `d` can be decided now: one `reach` back
	 * from the end, or, when `d` says which characters its matches hold, the character before the trailing
	 * run of them: a match starting there or earlier cannot run across that character, so it is decided.
	 */
	#lastStart(d: Detector): number {
		const buf = this.#buf;
		const byReach = buf.length - (d.reach ?? this.#lookBehind + 1);
		if (!d.chars) return byReach;
		let run = buf.length;
		while (run > 0 && run > byReach && d.chars.test(buf.charAt(run - 1))) run--;
		return Math.max(byReach, run - 1);
	}

	#step(final: boolean): StreamStep {
		const base = this.#base;
		const len = base + this.#buf.length;
		const counts = zeros(this.#g);
		this.#detectors.forEach(({ d, check }, k) => {
			const open = this.#open[k];
			if (open && d.tail) {
				const end = base + tailEnd(d.tail, this.#buf, open.from - base);
				if (end > open.from) this.#queue.push({ start: open.start, end, check });
				if (end === len && !final) {
					open.from = end;
					this.#next[k] = end;
					return;
				}
				this.#open[k] = null;
				this.#next[k] = end;
			}
			const lastStart = final ? this.#buf.length : this.#lastStart(d);
			const from = (this.#next[k] ?? 0) - base;
			const r = matchesOf(d, check, this.#buf, base, from, lastStart, final, this.#queue);
			counts[check] = (counts[check] ?? 0) + r.count;
			this.#next[k] = base + r.next;
			if (r.open !== null) this.#open[k] = { start: r.open, from: base + r.next };
		});

		const { findings, blocked } = outcome(this.#g, counts);
		if (blocked) {
			this.#blocked = blocked;
			this.#buf = "";
			this.#queue = [];
			return { emit: "", blocked, findings };
		}

		// Every match that could start before the least of the detectors' next search positions is found.
		let upTo = len;
		if (!final) for (const n of this.#next) upTo = Math.min(upTo, n);
		this.#queue.sort(byStart);
		let ready = 0;
		while (ready < this.#queue.length && (this.#queue[ready] as Span).start < upTo) ready++;
		const spans = this.#queue.splice(0, ready);
		const { text, reached } = this.#redactor.emit(this.#buf, base, this.#emitted, upTo, spans);
		this.#emitted = Math.max(this.#emitted, reached);

		let keep = this.#emitted;
		for (const n of this.#next) keep = Math.min(keep, n);
		const cut = Math.max(0, keep - STREAM_CONTEXT_CHARS - base);
		if (cut > 0) {
			this.#buf = this.#buf.slice(cut);
			this.#base = base + cut;
		}
		return { emit: text, blocked: null, findings };
	}
}
