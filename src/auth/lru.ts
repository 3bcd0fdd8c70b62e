/** A small bounded map with per-entry expiry, for isolate-local caches. */
export class TtlLru<K, V> {
	readonly #max: number;
	readonly #entries = new Map<K, { value: V; expiresAt: number }>();

	constructor(max: number) {
		if (!(max >= 1)) throw new Error("TtlLru: max must be at least 1");
		this.#max = max;
	}

	get(key: K, now = Date.now()): V | undefined {
		const entry = this.#entries.get(key);
		if (!entry) return undefined;
		this.#entries.delete(key);
		if (entry.expiresAt <= now) return undefined;
		this.#entries.set(key, entry);
		return entry.value;
	}

	set(key: K, value: V, expiresAt: number): void {
		this.#entries.delete(key);
		this.#entries.set(key, { value, expiresAt });
		if (this.#entries.size > this.#max) {
			const oldest = this.#entries.keys().next().value;
			if (oldest !== undefined) this.#entries.delete(oldest);
		}
	}

	delete(key: K): void {
		this.#entries.delete(key);
	}

	clear(): void {
		this.#entries.clear();
	}

	get size(): number {
		return this.#entries.size;
	}
}
