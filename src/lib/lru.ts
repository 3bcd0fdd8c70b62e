/** Bounded maps for isolate-local state: least recently used first out. */

/**
 * A Map bounded to `max` entries that forgets the least recently used one when full. `get` counts as
 * a use; `peek` and iteration do not. Insertion order is recency order, so eviction is O(1).
 */
export class Lru<K, V> {
	readonly #max: number;
	readonly #entries = new Map<K, V>();

	constructor(max: number) {
		if (!(max >= 1)) throw new Error("Lru: max must be at least 1");
		this.#max = max;
	}

	get(key: K): V | undefined {
		const value = this.#entries.get(key);
		if (value === undefined) return undefined;
		this.#entries.delete(key);
		this.#entries.set(key, value);
		return value;
	}

	/** The value without counting a use. */
	peek(key: K): V | undefined {
		return this.#entries.get(key);
	}

	set(key: K, value: V): void {
		this.#entries.delete(key);
		this.#entries.set(key, value);
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

	values(): IterableIterator<V> {
		return this.#entries.values();
	}

	get size(): number {
		return this.#entries.size;
	}
}

/** An {@link Lru} whose entries also expire at a time of their own. */
export class TtlLru<K, V> {
	readonly #entries: Lru<K, { value: V; expiresAt: number }>;

	constructor(max: number) {
		this.#entries = new Lru(max);
	}

	get(key: K, now = Date.now()): V | undefined {
		const entry = this.#entries.get(key);
		if (!entry) return undefined;
		if (entry.expiresAt <= now) {
			this.#entries.delete(key);
			return undefined;
		}
		return entry.value;
	}

	set(key: K, value: V, expiresAt: number): void {
		this.#entries.set(key, { value, expiresAt });
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
