/**
 * Matching and redaction: the spans a compiled check finds in a text, and the text with them replaced.
 *
 * The matches of all checks are redacted as one union: overlapping matches become a single
 * `[REDACTED:<check>]` named after the match that starts first (ties: the earlier check). Matches of
 * block checks are redacted too, so no returned text ever holds them. Findings carry counts, never text.
 */
import type { CompiledCheck, CompiledGuardrails } from "./compile";
import type { Detector } from "./detectors";

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

/** A match in absolute stream positions, `check` being its check's index. */
export interface Span {
	start: number;
	end: number;
	check: number;
}

export const byStart = (a: Span, b: Span): number => a.start - b.start || a.check - b.check;

/** The first accepted match of `d` in `text` starting in [from, lastStart], or null. */
function find(d: Detector, text: string, from: number, lastStart: number): { start: number; end: number } | null {
	let pos = from;
	while (pos <= lastStart) {
		if (d.anchor) {
			const at = text.indexOf(d.anchor.char, pos);
			if (at < 0) return null;
			pos = Math.max(pos, at - d.anchor.within);
			if (pos > lastStart) return null;
		}
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
export function tailEnd(tail: RegExp, text: string, at: number): number {
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
export function matchesOf(
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
export class Redactor {
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

export function zeros(g: CompiledGuardrails): number[] {
	return g.checks.map(() => 0);
}

export function outcome(
	g: CompiledGuardrails,
	counts: readonly number[],
): { findings: Finding[]; blocked: Finding | null } {
	const findings: Finding[] = [];
	g.checks.forEach((c, i) => {
		const count = counts[i] ?? 0;
		if (count > 0) findings.push({ check: c.name, action: c.action, count });
	});
	return { findings, blocked: findings.find((f) => f.action === "block") ?? null };
}

/** Redacts `text` whole, adding each check's match count to `counts`. Returns `text` itself when nothing matched. */
export function redactInto(g: CompiledGuardrails, text: string, counts: number[]): string {
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
