/** One value per binding per isolate, made on first use and dropped with the binding. */

/**
 * `make(key)` memoised by identity in a WeakMap: the usual shape of a per-isolate client over a
 * binding (`perIsolate((ns: DurableObjectNamespace) => new Client(ns))`). Bindings are stable objects
 * within an isolate, so each is built once; tests that pass a fresh env get a fresh one.
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
