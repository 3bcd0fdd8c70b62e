/** The regex-safety check of custom guardrail patterns: what a configuration may ask the scanner to run. */

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
