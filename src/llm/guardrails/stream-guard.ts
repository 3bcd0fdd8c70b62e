/** The guardrails applied to streamed text as it arrives, holding back only a bounded look-behind. */
import type { CompiledGuardrails } from "./compile";
import type { Detector } from "./detectors";
import { byStart, type Finding, matchesOf, outcome, Redactor, type Span, tailEnd, zeros } from "./redact";

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
