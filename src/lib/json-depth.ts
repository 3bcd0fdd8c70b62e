/** The nesting bound on client JSON, checked on the raw text in one pass before anything parses or walks it. */

/**
 * Deepest nesting of arrays and objects accepted in client JSON (`{"a":[1]}` nests 2 deep). Deeper
 * documents are refused where the body is read, so no walker over a parsed body (cache keys, provider
 * translation, `JSON.stringify`) ever meets one deep enough to exhaust the stack.
 */
export const MAX_JSON_DEPTH = 64;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/**
 * Whether `json` (text, or its UTF-8 bytes) nests arrays and objects deeper than `max`. Counts `[`
 * and `{` outside strings (honouring `\` escapes) without recursion and without parsing, so it is
 * linear, stops at the first level too deep, and says nothing about whether the text is valid JSON
 * (the parser that runs next decides that). In UTF-8 every byte of a multi-byte character is ≥ 0x80,
 * so the bytes can be scanned as they are.
 */
export function exceedsJsonDepth(json: string | Uint8Array, max: number = MAX_JSON_DEPTH): boolean {
	const text = typeof json === "string" ? json : null;
	const bytes = typeof json === "string" ? null : json;
	const length = json.length;
	let depth = 0;
	let inString = false;
	for (let i = 0; i < length; i++) {
		const c = text ? text.charCodeAt(i) : (bytes as Uint8Array)[i];
		if (inString) {
			if (c === BACKSLASH) i++;
			else if (c === QUOTE) inString = false;
		} else if (c === QUOTE) {
			inString = true;
		} else if (c === OPEN_BRACKET || c === OPEN_BRACE) {
			if (++depth > max) return true;
		} else if ((c === CLOSE_BRACKET || c === CLOSE_BRACE) && depth > 0) {
			depth--;
		}
	}
	return false;
}
