/**
 * Time in tests of the Durable Objects: each object decides at its own `clock` (the real one unless a
 * test replaces it), which only code running inside the object can reach (through the class's static
 * `internals`). An evicted object comes back on the real clock, but its stored machine never lets time
 * run backwards: after a clock set ahead of real time, it keeps deciding at that time until real time
 * passes it (harmless with per-file storage; a test that needs real time again should use another object).
 */
import { runInDurableObject } from "cloudflare:test";
import type { CircuitBreaker } from "../../durable-objects/circuit-breaker";
import type { RateLimiter } from "../../durable-objects/rate-limiter";
import type { Clock } from "../../src/lib";

/** Puts the object behind `stub` on `clock` until it is evicted or put on another. */
export function setObjectClock<O extends CircuitBreaker | RateLimiter>(
	stub: DurableObjectStub<O>,
	clock: Clock,
): Promise<void> {
	return runInDurableObject(stub, (instance: O) => {
		// The instance's own class (the worker's module), not one this file imports.
		(instance.constructor as typeof CircuitBreaker | typeof RateLimiter).internals(instance as never).setClock(clock);
	});
}
