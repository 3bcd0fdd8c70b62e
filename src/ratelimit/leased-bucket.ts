/**
 * The leased admission bucket: exact per-tenant (or per-key) admission — a token bucket for rate and a monthly
 * quota — that hands isolates short-lived *leases* of tokens, so most requests are admitted from
 * isolate memory without a Durable Object round trip, and yet the gateway never admits more than
 * the limit, under any concurrency, across any number of isolates.
 *
 * ## Design
 * One RateLimiter Durable Object per limited subject (`tenant:<id>`, `key:<id>`), named by `rateLimiterName`
 * and reached through `rateLimiterFor` (interface.ts); durable-objects/rate-limiter.ts persists this machine.
 * The object keeps, in SQLite and mirrored in memory:
 *   - `available`  tokens in the bucket that nobody holds,
 *   - `outstanding` tokens handed out in leases that have not been returned or expired,
 *   - `quotaUsed`  tokens charged to the current calendar month (UTC),
 *   - one row per lease: id, tokens, expiry, month.
 * An isolate calls `acquire({ policy, want, returns })`. The object (1) retires leases whose expiry
 * has passed, in expiry order, (2) takes back the unspent part of the leases the isolate returns,
 * (3) grants `n ≤ min(want, ⌊available⌋, quota left, lease cap)` tokens as a new lease, moving them
 * from `available` to `outstanding` and charging them to the quota at once. The isolate spends a
 * lease's tokens one per request, only before its local deadline, and returns what is left the
 * next time it calls. The whole of `acquire` is synchronous, so calls are serialised.
 *
 * Refill treats leased tokens as still in the bucket: the level L = available + outstanding is
 * what is capped at `burst`, and refill adds to `available` only while L < burst. A lease leaves
 * L only when it is returned (its spent tokens leave; its unspent ones go back to `available`) or
 * when it expires (all its tokens leave, as if spent at the last moment they could have been).
 * Refill is computed piecewise between those events, so the cap in force at each moment is used.
 *
 * ## Why it never over-admits
 * Claim: in any interval [s, e], admissions ≤ burst + perSecond·(e − s), and in any month,
 * admissions ≤ monthlyQuota — exactly the bounds of one token bucket and one counter.
 *  1. Every admission spends one token of one lease, and a lease's tokens are spent at most once:
 *     an isolate is single-threaded, decrements its local count before admitting, never spends
 *     after its deadline, and stops spending a lease before it reports it returned.
 *  2. A token spent in [s, e] was, at time s, either in `available` or in an outstanding lease —
 *     i.e. counted in L(s) ≤ burst — or was added by refill during (s, e], which adds at most
 *     perSecond·(e − s). Tokens returned unspent go back into `available` but were already counted
 *     in L, so returns never create tokens. An expired lease's tokens leave L at its expiry, which is
 *     no earlier than any spend from it (point 3), so a refill never replaces a token that may still
 *     be spent. Hence spends in [s, e] ≤ L(s) + perSecond·(e − s) ≤ burst + perSecond·(e − s).
 *  3. Clocks. The isolate measures a lease's life with its own clock from the moment it *sent* the
 *     request (before the object granted it), minus a safety margin; the object keeps the lease in L
 *     until its expiry plus {@link LEASE_EXPIRY_GRACE_MS}. So every spend falls before the lease leaves
 *     L provided the two clocks advance at the same rate and the object's clock does not run ahead of
 *     the isolate's by more than the grace plus the margin. The object's clock is clamped so it never
 *     runs backwards (a restart elsewhere, a clock step): refill and the quota period only move forward.
 *     This is the one assumption the guarantee rests on.
 *  4. Quota: tokens are charged when granted, before any can be spent, and a lease never outlives
 *     the month it was charged to (no lease shorter than {@link MIN_LEASE_TTL_MS} is granted, so in
 *     the last moments of a month requests wait for the new one). Unspent tokens are credited back
 *     only when the isolate reports them — after it has stopped spending that lease — so `quotaUsed`
 *     never falls below the tokens actually spent this month.
 * Because a lease moves tokens out of reach of other isolates, the price of exactness is possible
 * *under*-admission: an isolate that goes quiet holding part of a lease keeps those tokens until it
 * returns them or the lease expires (≤ `ttlMs`; an evicted isolate's quota tokens are lost for the
 * month). So leases are kept small: an isolate asks for about what it spent from its last lease
 * (lease-client.ts), and the object grants at most a quarter of what is left, capped by
 * the tier, and single tokens when fewer than eight remain, so the last tokens go one request at a time.
 */
import type { BucketPolicy, Grant, LeaseReturn, LimiterState } from "./interface";
import { monthEnd, monthKey } from "./period";

/** A lease as the object records it. */
export interface LeaseRow {
	id: string;
	tokens: number;
	expiresAt: number;
	period: string;
	/** Expired leases are kept for a while so a late report can still credit the quota. */
	expired: boolean;
}

/** The bucket's scalar state, as persisted. */
export interface BucketRow {
	available: number;
	outstanding: number;
	updatedAt: number;
	quotaUsed: number;
	period: string;
}

/** Where a {@link LeasedBucket} writes its changes (the Durable Object's SQLite; nothing in tests). */
export interface BucketStore {
	saveBucket(row: BucketRow): void;
	saveLease(lease: LeaseRow): void;
	deleteLease(id: string): void;
}

/** Keep expired leases this long for late quota corrections. */
const EXPIRED_LEASE_RETENTION_MS = 60 * 60 * 1000;
/** A lease stays in the bucket's level this long past its expiry: slack for the object's clock running ahead. */
export const LEASE_EXPIRY_GRACE_MS = 1000;
/** No lease shorter than this is granted (it could die on the way back): the last moments of a month wait. */
export const MIN_LEASE_TTL_MS = 250;

/**
 * The bucket-and-leases algorithm described at the top of this file, with the clock passed in.
 * Pure apart from the store it writes to, so it can be checked against simulated time.
 */
export class LeasedBucket {
	#available = 0;
	#outstanding = 0;
	#updatedAt = 0;
	#quotaUsed = 0;
	#period = "";
	#initialised = false;
	readonly #leases = new Map<string, LeaseRow>();
	readonly #store: BucketStore | undefined;
	readonly #newId: () => string;

	constructor(options: { bucket?: BucketRow; leases?: LeaseRow[]; store?: BucketStore; newId?: () => string } = {}) {
		this.#store = options.store;
		this.#newId = options.newId ?? (() => crypto.randomUUID());
		if (options.bucket) {
			this.#available = options.bucket.available;
			this.#outstanding = options.bucket.outstanding;
			this.#updatedAt = options.bucket.updatedAt;
			this.#quotaUsed = options.bucket.quotaUsed;
			this.#period = options.bucket.period;
			this.#initialised = true;
		}
		for (const lease of options.leases ?? []) this.#leases.set(lease.id, { ...lease });
	}

	/** Adds the refill due up to `to`, never lifting available + outstanding above `burst`. */
	#refillTo(to: number, policy: BucketPolicy): void {
		if (to <= this.#updatedAt) return;
		const cap = policy.rate.burst - this.#outstanding;
		if (this.#available < cap) {
			const added = ((to - this.#updatedAt) / 1000) * policy.rate.perSecond;
			this.#available = Math.min(cap, this.#available + added);
		}
		this.#updatedAt = to;
	}

	/** Takes back returned leases, retires expired ones and grants a new lease of up to `want` tokens. */
	acquire(request: { policy: BucketPolicy; want: number; returns: LeaseReturn[] }, clock: number): Grant {
		const { policy, want, returns } = request;
		// The object's time never runs backwards (a restart on another host, a clock step), so neither
		// does refill nor the quota period.
		const now = this.#initialised ? Math.max(clock, this.#updatedAt) : clock;
		const period = monthKey(now);

		if (!this.#initialised) {
			this.#available = policy.rate.burst;
			this.#updatedAt = now;
			this.#period = period;
			this.#initialised = true;
		}
		if (this.#period !== period) {
			this.#period = period;
			this.#quotaUsed = 0;
		}

		// 1. Retire expired leases in expiry order, refilling up to each retirement with the cap then in force.
		const retire = (l: LeaseRow) => l.expiresAt + LEASE_EXPIRY_GRACE_MS;
		const expiring = [...this.#leases.values()]
			.filter((l) => !l.expired && retire(l) <= now)
			.sort((a, b) => a.expiresAt - b.expiresAt);
		for (const lease of expiring) {
			this.#refillTo(retire(lease), policy);
			this.#outstanding -= lease.tokens;
			lease.expired = true;
			this.#store?.saveLease(lease);
		}
		this.#refillTo(now, policy);

		// 2. Returned leases: unspent tokens of a live lease go back to the bucket; the quota is credited either way.
		for (const r of returns) {
			const lease = this.#leases.get(r.leaseId);
			if (!lease) continue;
			const unspent = Math.min(r.unspent, lease.tokens);
			if (!lease.expired) {
				this.#outstanding -= lease.tokens;
				this.#available += unspent;
			}
			if (lease.period === period) this.#quotaUsed -= unspent;
			this.#leases.delete(lease.id);
			this.#store?.deleteLease(lease.id);
		}

		// A lowered burst takes effect at once.
		this.#available = Math.min(this.#available, Math.max(0, policy.rate.burst - this.#outstanding));

		// 3. Grant: a quarter of what is left (one token at a time near the end), capped by the tier.
		const quotaLeft = Math.max(0, policy.monthlyQuota - this.#quotaUsed);
		const pool = Math.min(Math.floor(this.#available), quotaLeft);
		const share = pool < 8 ? 1 : Math.floor(pool / 4);
		const periodEnd = monthEnd(now);
		const ttlMs = Math.max(0, Math.min(policy.lease.ttlMs, periodEnd - now));
		const monthEnding = ttlMs < Math.min(MIN_LEASE_TTL_MS, policy.lease.ttlMs);
		const granted = monthEnding ? 0 : Math.max(0, Math.min(want, pool, share, policy.lease.maxTokens));
		let leaseId: string | null = null;
		if (granted > 0) {
			leaseId = this.#newId();
			this.#available -= granted;
			this.#outstanding += granted;
			this.#quotaUsed += granted;
			const lease: LeaseRow = { id: leaseId, tokens: granted, expiresAt: now + ttlMs, period, expired: false };
			this.#leases.set(leaseId, lease);
			this.#store?.saveLease(lease);
		}

		// 4. Forget expired leases too old to be reported.
		for (const lease of this.#leases.values()) {
			if (lease.expired && now - lease.expiresAt > EXPIRED_LEASE_RETENTION_MS) {
				this.#leases.delete(lease.id);
				this.#store?.deleteLease(lease.id);
			}
		}

		this.#store?.saveBucket({
			available: this.#available,
			outstanding: this.#outstanding,
			updatedAt: this.#updatedAt,
			quotaUsed: this.#quotaUsed,
			period: this.#period,
		});

		const quotaRemaining = Math.max(0, policy.monthlyQuota - this.#quotaUsed);
		const missing = Math.max(0, policy.rate.burst - this.#outstanding - this.#available);
		let limitedBy: Grant["limitedBy"] = null;
		let retryAfterMs = 0;
		if (granted === 0) {
			if (monthEnding) {
				limitedBy = "rate";
				retryAfterMs = periodEnd - now;
			} else if (quotaLeft === 0) {
				limitedBy = "quota";
				retryAfterMs = periodEnd - now;
			} else {
				limitedBy = "rate";
				retryAfterMs = this.#msUntilToken(now, policy);
			}
		}
		return {
			leaseId,
			granted,
			ttlMs,
			available: Math.floor(this.#available),
			quotaRemaining,
			quotaResetMs: periodEnd - now,
			rateResetMs: Math.ceil((missing / policy.rate.perSecond) * 1000),
			limitedBy,
			retryAfterMs,
		};
	}

	/** When the next whole token will be free: by refill, or after the first lease that blocks refill expires. */
	#msUntilToken(now: number, policy: BucketPolicy): number {
		const need = Math.max(0, 1 - this.#available);
		const byRefill = (need / policy.rate.perSecond) * 1000;
		if (this.#available + need <= policy.rate.burst - this.#outstanding) return Math.ceil(byRefill);
		let soonest = Number.POSITIVE_INFINITY;
		for (const lease of this.#leases.values()) {
			if (!lease.expired) soonest = Math.min(soonest, lease.expiresAt + LEASE_EXPIRY_GRACE_MS - now);
		}
		return Math.ceil((Number.isFinite(soonest) ? soonest : 0) + byRefill);
	}

	state(): LimiterState {
		return {
			available: this.#available,
			outstanding: this.#outstanding,
			quotaUsed: this.#quotaUsed,
			period: this.#period,
			leases: [...this.#leases.values()].filter((l) => !l.expired).length,
		};
	}
}
