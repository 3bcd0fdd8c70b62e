/**
 * A small deterministic PRNG (mulberry32), so a randomised test or a benchmark's shuffle reproduces
 * from its seed. Plain TypeScript with erasable syntax: loaded by vitest (workerd and Node) and by the
 * benchmarks through Node's type stripping.
 */
export function mulberry32(seed: number): () => number {
	let a = seed >>> 0;
	return () => {
		a = (a + 0x6d2b79f5) >>> 0;
		let t = a;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}

/**
 * A word no other call returns (12 letters a–p, 48 random bits), for prompts that must never hit a
 * cached answer. Letters only: the digits of a UUID can pass the shipped card-number guardrail.
 */
export function uniqueWord(): string {
	return Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => String.fromCharCode(97 + (b % 16))).join("");
}
