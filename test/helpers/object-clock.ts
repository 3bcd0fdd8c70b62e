/**
 * Time in tests of the Durable Objects: each object decides at its own `clock` (the real one unless a
 * test replaces it), which only code running inside the object can reach. An evicted object comes
 * back on the real clock.
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
		instance.clock = clock;
	});
}
