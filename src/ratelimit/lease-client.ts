/**
 * The isolate's side of leased admission (see leased-bucket.ts for the design and the proof). Each isolate holds at most one live lease per limiter and spends it from memory; it
 * goes to the RateLimiter object only when the lease is spent or expired, and concurrent requests
 * that find the lease empty wait for one shared refill instead of each making a round trip.
 *
 * A refill belongs to the request that started it. If that request is cancelled, its refill may
 * never settle, so every waiter races the refill against its own timer (made in its own request)
 * and a refill older than `refillTimeoutMs` is abandoned: the next request starts a fresh one, and
 * if the old one answers after all, its tokens are handed back unspent.
 */
import { errorMessage, Lru, TIMED_OUT, within } from "../lib";
import type { Admission, BucketPolicy, Decision, Grant, LeaseReturn } from "./interface";

/** What the client needs of a RateLimiter stub. */
export interface LimiterStub {
	acquire(input: { policy: BucketPolicy; want: number; returns: LeaseReturn[] }): Promise<Grant>;
}

export interface LeaseClientOptions {
	stub: (name: string) => LimiterStub;
	now?: () => number;
	/** Most limiters remembered; the least recently used is forgotten (its lease tokens are lost, never over-spent). */
	maxLimiters?: number;
	/** Subtracted from a lease's life so it ends before the object's expiry. */
	safetyMarginMs?: number;
	/** A refused request is refused locally for up to this long before asking the object again. */
	maxDenyCacheMs?: number;
	/** After the object could not be reached, wait this long before trying it again. */
	unavailableBackoffMs?: number;
	/** A refill that has not answered after this long is abandoned and the object counted unreachable. */
	refillTimeoutMs?: number;
}

/** Upper bound on refills one request waits through; each refill grants at least one token or refuses. */
const MAX_PASSES = 256;

interface Refill {
	promise: Promise<void>;
	startedAt: number;
}

interface Local {
	name: string;
	leaseId: string | null;
	tokens: number;
	/** Tokens the current lease started with. */
	granted: number;
	/** Tokens spent from the last closed lease: this isolate's recent demand. */
	lastSpent: number;
	/** Requests waiting for a refill. */
	waiting: number;
	deadline: number;
	/** Leases closed locally but not yet reported to the object. */
	returns: LeaseReturn[];
	refill: Refill | null;
	last: Grant | null;
	deniedAt: number;
	deniedUntil: number;
	unavailableUntil: number;
	unavailableReason: string;
}

/** Leased admission for one isolate. Create one per isolate (module scope). */
export class LeaseClient implements Admission {
	readonly #limiters: Lru<string, Local>;
	readonly #stub: (name: string) => LimiterStub;
	readonly #now: () => number;
	readonly #margin: number;
	readonly #maxDeny: number;
	readonly #backoff: number;
	readonly #refillTimeout: number;

	constructor(options: LeaseClientOptions) {
		this.#stub = options.stub;
		this.#now = options.now ?? Date.now;
		const max = options.maxLimiters ?? 10_000;
		this.#margin = options.safetyMarginMs ?? 50;
		this.#maxDeny = options.maxDenyCacheMs ?? 1000;
		this.#backoff = options.unavailableBackoffMs ?? 1000;
		this.#refillTimeout = options.refillTimeoutMs ?? 2000;
		if (max < 1 || this.#margin < 0 || this.#refillTimeout <= 0) throw new Error("LeaseClient: invalid options");
		this.#limiters = new Lru(max);
	}

	#local(name: string): Local {
		let local = this.#limiters.get(name);
		if (local) return local;
		local = {
			name,
			leaseId: null,
			tokens: 0,
			granted: 0,
			lastSpent: 0,
			waiting: 0,
			deadline: 0,
			returns: [],
			refill: null,
			last: null,
			deniedAt: 0,
			deniedUntil: 0,
			unavailableUntil: 0,
			unavailableReason: "",
		};
		this.#limiters.set(name, local);
		return local;
	}

	/** Closes the current lease locally: no token of it is spent after this. */
	#close(local: Local): void {
		if (local.leaseId) {
			local.returns.push({ leaseId: local.leaseId, unspent: local.tokens });
			local.lastSpent = local.granted - local.tokens;
		}
		local.leaseId = null;
		local.tokens = 0;
	}

	#unavailable(local: Local, reason: string): void {
		local.unavailableUntil = this.#now() + this.#backoff;
		local.unavailableReason = reason;
	}

	#startRefill(local: Local, policy: BucketPolicy): Refill {
		this.#close(local);
		const returns = local.returns;
		local.returns = [];
		const sentAt = this.#now();
		// Ask for what this isolate is likely to spend while the lease lives: twice what it spent from
		// the last one, or everyone already waiting. Small leases keep idle isolates from holding tokens.
		const want = Math.max(1, Math.min(policy.lease.maxTokens, Math.max(2 * local.lastSpent, local.waiting + 1)));
		const refill: Refill = { startedAt: sentAt, promise: Promise.resolve() };
		refill.promise = (async () => {
			try {
				// A stub belongs to the request that made it: make one per call, never cache it across requests.
				const grant = await this.#stub(local.name).acquire({ policy, want, returns });
				if (local.refill !== refill) {
					// Abandoned while in flight: give its tokens back unspent with the next call.
					if (grant.leaseId) local.returns.push({ leaseId: grant.leaseId, unspent: grant.granted });
					return;
				}
				local.last = grant;
				if (grant.granted > 0 && grant.leaseId) {
					local.leaseId = grant.leaseId;
					local.tokens = grant.granted;
					local.granted = grant.granted;
					local.deadline = sentAt + grant.ttlMs - this.#margin;
					local.deniedUntil = 0;
					if (this.#now() >= local.deadline) {
						// The answer took longer than the lease lives: the object is too slow to lease from.
						this.#close(local);
						this.#unavailable(local, "the rate limiter answered after the lease had expired");
					}
				} else {
					local.deniedAt = this.#now();
					local.deniedUntil = local.deniedAt + Math.min(grant.retryAfterMs, this.#maxDeny);
				}
			} catch (err) {
				// Unreported returns are kept and sent with the next call: the quota credit is not lost.
				local.returns = returns.concat(local.returns).slice(-64);
				if (local.refill === refill) this.#unavailable(local, errorMessage(err));
			} finally {
				if (local.refill === refill) local.refill = null;
			}
		})();
		local.refill = refill;
		return refill;
	}

	/** Waits for the refill in flight, on this request's own timer; abandons it once it is too old. */
	async #await(local: Local, refill: Refill): Promise<void> {
		local.waiting++;
		const outcome = await within(refill.promise, refill.startedAt + this.#refillTimeout - this.#now());
		local.waiting--;
		if (outcome === TIMED_OUT && local.refill === refill) {
			local.refill = null;
			this.#unavailable(local, `the rate limiter did not answer within ${this.#refillTimeout} ms`);
		}
	}

	async take(name: string, policy: BucketPolicy): Promise<Decision> {
		const local = this.#local(name);
		for (let pass = 0; pass < MAX_PASSES; pass++) {
			const now = this.#now();
			if (local.leaseId && now >= local.deadline) this.#close(local);
			if (local.leaseId && local.tokens > 0) {
				local.tokens--;
				return this.#allowed(local, local.leaseId);
			}
			if (local.refill) {
				await this.#await(local, local.refill);
				continue;
			}
			if (now < local.unavailableUntil) return { kind: "unavailable", reason: local.unavailableReason };
			if (now < local.deniedUntil && local.last) return this.#denied(local, now);
			if (pass > 0 && local.last && local.last.granted === 0) return this.#denied(local, now);
			await this.#await(local, this.#startRefill(local, policy));
		}
		if (this.#now() < local.unavailableUntil) return { kind: "unavailable", reason: local.unavailableReason };
		return this.#denied(local, this.#now());
	}

	#allowed(local: Local, leaseId: string): Decision {
		const last = local.last;
		let refunded = false;
		return {
			kind: "allowed",
			rateRemaining: local.tokens + (last?.available ?? 0),
			rateResetMs: last?.rateResetMs ?? 0,
			quotaRemaining: Math.max(0, (last?.quotaRemaining ?? 0) + local.tokens),
			quotaResetMs: last?.quotaResetMs ?? 0,
			refund: () => {
				// Only into the same, still-live lease; otherwise the token is simply not used (never over-spent).
				if (!refunded && local.leaseId === leaseId && this.#now() < local.deadline) local.tokens++;
				refunded = true;
			},
		};
	}

	#denied(local: Local, now: number): Decision {
		const last = local.last;
		const elapsed = Math.max(0, now - local.deniedAt);
		return {
			kind: "denied",
			limitedBy: last?.limitedBy ?? "rate",
			retryAfterMs: Math.max(0, (last?.retryAfterMs ?? 1000) - elapsed),
			rateRemaining: 0,
			rateResetMs: last?.rateResetMs ?? 0,
			quotaRemaining: last?.quotaRemaining ?? 0,
			quotaResetMs: last?.quotaResetMs ?? 0,
		};
	}
}
