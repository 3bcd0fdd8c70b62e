/** One value per object per isolate, made on first use and dropped with the object. */

/**
 * `make(key)` memoised by the key's identity in a WeakMap. The usual keys: a binding, for a per-isolate
 * client over it (`perIsolate((ns: DurableObjectNamespace) => new Client(ns))`; bindings are stable
 * objects within an isolate, and a test that passes a fresh env gets a fresh client), or a parsed
 * config object, for what is derived from it once per config version.
 */
export function perIsolate<K extends object, V>(make: (key: K) => V): (key: K) => V {
	const made = new WeakMap<K, V>();
	return (key) => {
		let value = made.get(key);
		if (value === undefined) {
			value = make(key);
			made.set(key, value);
		}
		return value;
	};
}
