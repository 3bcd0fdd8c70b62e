/** Small JSON helpers: type narrowing and the canonical form that hashes and cache keys are taken over. */

export function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Canonical JSON of a JSON value: object members sorted by key (UTF-16 code units, as RFC 8785),
 * no whitespace, numbers and strings as `JSON.stringify` writes them. Written with an explicit stack,
 * not recursion, so no depth of nesting can exhaust the call stack.
 */
export function canonicalJson(value: unknown): string {
	const out: string[] = [];
	// What is left to write, last first: a value (boxed) or a piece of punctuation (a string).
	const todo: Array<{ value: unknown } | string> = [{ value }];
	for (let next = todo.pop(); next !== undefined; next = todo.pop()) {
		if (typeof next === "string") {
			out.push(next);
			continue;
		}
		const v = next.value;
		if (v === null || typeof v !== "object") {
			out.push(JSON.stringify(v) ?? "null");
		} else if (Array.isArray(v)) {
			out.push("[");
			todo.push("]");
			for (let i = v.length - 1; i >= 0; i--) {
				todo.push({ value: v[i] });
				if (i > 0) todo.push(",");
			}
		} else {
			const record = v as Record<string, unknown>;
			const keys = Object.keys(record)
				.filter((k) => record[k] !== undefined)
				.sort();
			out.push("{");
			todo.push("}");
			for (let i = keys.length - 1; i >= 0; i--) {
				const key = keys[i] as string;
				todo.push({ value: record[key] });
				todo.push(`${i > 0 ? "," : ""}${JSON.stringify(key)}:`);
			}
		}
	}
	return out.join("");
}
