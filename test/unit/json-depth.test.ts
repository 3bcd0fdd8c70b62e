/** The JSON nesting bound: the one-pass scanner against real nesting, strings, escapes and UTF-8 bytes. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { exceedsJsonDepth, MAX_JSON_DEPTH } from "../../src/lib";

const nested = (depth: number, inner = "1") => `${'{"a":['.repeat(depth)}${inner}${"]}".repeat(depth)}`;

/** How deep a parsed JSON value nests (iteratively, as the scanner must agree at any depth). */
function depthOf(value: unknown): number {
	let max = 0;
	const stack: Array<[unknown, number]> = [[value, 0]];
	while (stack.length > 0) {
		const [v, d] = stack.pop() as [unknown, number];
		if (v === null || typeof v !== "object") continue;
		max = Math.max(max, d + 1);
		for (const child of Object.values(v)) stack.push([child, d + 1]);
	}
	return max;
}

describe("exceedsJsonDepth", () => {
	it("accepts MAX_JSON_DEPTH levels and refuses one more", () => {
		expect(MAX_JSON_DEPTH).toBe(64);
		expect(exceedsJsonDepth(`${"[".repeat(64)}${"]".repeat(64)}`)).toBe(false);
		expect(exceedsJsonDepth(`${"[".repeat(65)}${"]".repeat(65)}`)).toBe(true);
		expect(exceedsJsonDepth(nested(32))).toBe(false);
		expect(exceedsJsonDepth(nested(33))).toBe(true);
	});

	it("refuses 10,000 levels, as text and as UTF-8 bytes, truncated or not", () => {
		const deep = nested(5000);
		expect(exceedsJsonDepth(deep)).toBe(true);
		expect(exceedsJsonDepth(new TextEncoder().encode(deep))).toBe(true);
		expect(exceedsJsonDepth("[".repeat(10_000))).toBe(true);
	});

	it("does not count brackets inside strings, escaped quotes included", () => {
		const inString = JSON.stringify({ s: `"\\${"[{".repeat(5000)}`, t: "é😀[" });
		expect(exceedsJsonDepth(inString)).toBe(false);
		expect(exceedsJsonDepth(new TextEncoder().encode(inString))).toBe(false);
		expect(exceedsJsonDepth(`["\\\\",${"[".repeat(64)}${"]".repeat(64)}]`)).toBe(true);
	});

	it("agrees with the depth of any JSON value, at any bound", () => {
		fc.assert(
			fc.property(fc.jsonValue({ maxDepth: 12 }), fc.integer({ min: 0, max: 14 }), (value, max) => {
				const text = JSON.stringify(value);
				const expected = depthOf(value) > max;
				expect(exceedsJsonDepth(text, max)).toBe(expected);
				expect(exceedsJsonDepth(new TextEncoder().encode(text), max)).toBe(expected);
			}),
			{ seed: 64, numRuns: 500 },
		);
	});
});
