/**
 * RateLimiter: exact per-tenant (or per-key) admission — a token bucket for rate and a monthly
 * quota — that hands isolates short-lived *leases* of tokens, so most requests are admitted from
 * isolate memory without a Durable Object round trip, and yet the gateway never admits more than
 * the limit, under any concurrency, across any number of isolates.
 *
 * ## Design
 * One instance per limited subject (`tenant:<id>`, `key:<id>`), named by `rateLimiterName` in src/ratelimit.
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
 * (src/ratelimit/lease-client.ts), and the object grants at most a quarter of what is left, capped by
 * the tier, and single tokens when fewer than eight remain, so the last tokens go one request at a time.
 *
 * ## LLM budgets
 * A tenant's object also keeps its monthly LLM budget ({@link BudgetLedger}): requests reserve their
 * estimated tokens and cost before calling a provider and settle their actual usage afterwards
 * (client and contract in src/ratelimit/budget.ts). Its state lives in its own tables, beside the bucket's.
 */
import { DurableObject } from "cloudflare:workers";
import type { LlmBudget } from "../src/config";
import { SqlMeter } from "../src/db";
import {
	type AcquireRequest,
	AcquireRequestSchema,
	type BucketPolicy,
	type BudgetSettlement,
	type BudgetState,
	type BudgetStateRequest,
	BudgetStateRequestSchema,
	type BudgetTotals,
	type Grant,
	type LeaseReturn,
	type LimiterState,
	type RenewBudgetInput,
	type RenewBudgetRequest,
	RenewBudgetRequestSchema,
	type RenewBudgetResult,
	type ReserveBudgetRequest,
	ReserveBudgetRequestSchema,
	type ReserveBudgetResult,
	rateLimiterName,
	type SettleBudgetRequest,
	SettleBudgetRequestSchema,
} from "../src/ratelimit";

export type {
	BucketPolicy,
	BudgetSettlement,
	BudgetState,
	Grant,
	LeaseReturn,
	LimiterState,
	RenewBudgetResult,
	ReserveBudgetResult,
};

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

function monthKey(ms: number): string {
	const d = new Date(ms);
	return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

function monthEnd(ms: number): number {
	const d = new Date(ms);
	return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

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

/** A budget reservation as the object records it. */
export interface ReservationRow {
	id: string;
	tokens: number;
	microUsd: number;
	expiresAt: number;
	/** The month it is charged to, whenever it is settled or expires. */
	period: string;
}

/** The budget's scalar state, as persisted. */
export interface BudgetRow {
	usedTokens: number;
	usedMicroUsd: number;
	period: string;
	/** The latest time the ledger has seen: its clock never runs backwards. */
	clock: number;
}

/** Where a {@link BudgetLedger} writes its changes (the Durable Object's SQLite; nothing in tests). */
export interface BudgetStore {
	saveBudget(row: BudgetRow): void;
	saveReservation(reservation: ReservationRow): void;
	deleteReservation(id: string): void;
}

/** Retry hint for a refusal caused only by reservations in flight, which may settle for less. */
const RESERVED_RETRY_MS = 1000;

/** What is left of `limit` (null = unlimited); negative once settlements have overshot it. */
function left(limit: number | null, used: number, reserved: number): number | null {
	return limit === null ? null : limit - used - reserved;
}

/**
 * A tenant's monthly LLM budget: tokens and micro-dollars used this month (UTC), and reservations.
 *
 * `reserve` admits a request only if usage plus every outstanding reservation of this month plus the
 * request's estimate stays within each limit, and records the estimate as a reservation in the same
 * synchronous step, so concurrent reservations never together exceed the budget. `settle` replaces a
 * reservation by the request's actual usage (charged to the month the reservation was made in; a
 * closed month's charge is dropped, its budget being over). A reservation not settled by its expiry is
 * charged its reserved amount — never less than was estimated — and removed; a late or repeated
 * settlement finds nothing and charges nothing, so each reservation is charged exactly once.
 *
 * Hence, in any month, usage + reservations ≤ limit + Σ max(0, actual − reserved) over the settlements
 * made so far: concurrency alone never overshoots, and the budget is exceeded only by requests that
 * used more than they reserved, by at most that excess, all of them admitted before it was known.
 * Checks, expiry and the month rollover run on the object's clock, which is clamped so it never runs
 * backwards. Pure apart from the store it writes to, with the clock passed in.
 */
export class BudgetLedger {
	readonly #row: BudgetRow = { usedTokens: 0, usedMicroUsd: 0, period: "", clock: 0 };
	/** Sums over the reservations of the current month. */
	#reservedTokens = 0;
	#reservedMicroUsd = 0;
	/** No reservation expires before this (it may be earlier than the true next expiry, never later). */
	#nextExpiry = Number.POSITIVE_INFINITY;
	readonly #reservations = new Map<string, ReservationRow>();
	readonly #store: BudgetStore | undefined;
	readonly #newId: () => string;

	constructor(
		options: { budget?: BudgetRow; reservations?: ReservationRow[]; store?: BudgetStore; newId?: () => string } = {},
	) {
		this.#store = options.store;
		this.#newId = options.newId ?? (() => crypto.randomUUID());
		if (options.budget) Object.assign(this.#row, options.budget);
		for (const r of options.reservations ?? []) {
			this.#reservations.set(r.id, { ...r });
			this.#nextExpiry = Math.min(this.#nextExpiry, r.expiresAt);
		}
		this.#recount();
	}

	#recount(): void {
		this.#reservedTokens = 0;
		this.#reservedMicroUsd = 0;
		for (const r of this.#reservations.values()) {
			if (r.period !== this.#row.period) continue;
			this.#reservedTokens += r.tokens;
			this.#reservedMicroUsd += r.microUsd;
		}
	}

	/** Removes a reservation, charging `tokens` and `microUsd` to its month if that is still the current one. */
	#close(r: ReservationRow, tokens: number, microUsd: number): void {
		this.#reservations.delete(r.id);
		this.#store?.deleteReservation(r.id);
		if (r.period !== this.#row.period) return;
		this.#reservedTokens -= r.tokens;
		this.#reservedMicroUsd -= r.microUsd;
		this.#row.usedTokens += tokens;
		this.#row.usedMicroUsd += microUsd;
	}

	/** Moves the clock forward (never back), rolls the month over and charges expired reservations. */
	#advance(clock: number): number {
		const now = Math.max(clock, this.#row.clock);
		this.#row.clock = now;
		const period = monthKey(now);
		if (period !== this.#row.period) {
			this.#row.period = period;
			this.#row.usedTokens = 0;
			this.#row.usedMicroUsd = 0;
			this.#recount();
		}
		if (now >= this.#nextExpiry) {
			this.#nextExpiry = Number.POSITIVE_INFINITY;
			for (const r of this.#reservations.values()) {
				if (r.expiresAt <= now) this.#close(r, r.tokens, r.microUsd);
				else this.#nextExpiry = Math.min(this.#nextExpiry, r.expiresAt);
			}
		}
		return now;
	}

	#totals(): BudgetTotals {
		return {
			period: this.#row.period,
			usedTokens: this.#row.usedTokens,
			usedMicroUsd: this.#row.usedMicroUsd,
			reservedTokens: this.#reservedTokens,
			reservedMicroUsd: this.#reservedMicroUsd,
		};
	}

	/** Reserves one request's estimate if it fits in what is left of each limit this month: a lease granted exactly that. */
	reserve(
		request: { budget: LlmBudget; tokens: number; microUsd: number; ttlMs: number },
		clock: number,
	): ReserveBudgetResult {
		const { budget, tokens, microUsd, ttlMs } = request;
		const estimate = { tokens, microUsd };
		const none = { tokens: 0, microUsd: 0 };
		const answer = this.renew(
			{ budget, used: none, held: none, want: estimate, atLeast: estimate, ttlMs },
			clock,
			// A zero estimate still gets a reservation, for its settlement to charge.
			{ keepEmpty: true },
		);
		const { remainingTokens, remainingMicroUsd, resetMs } = answer;
		if (!answer.ok) {
			const { limitedBy, retryAfterMs } = answer;
			return { ok: false, limitedBy, remainingTokens, remainingMicroUsd, resetMs, retryAfterMs };
		}
		return { ok: true, reservationId: answer.leaseId ?? "", remainingTokens, remainingMicroUsd, resetMs };
	}

	/**
	 * Renews an isolate's budget lease (src/ratelimit/budget.ts): one reservation that the isolate
	 * spends its requests' estimates from. In one synchronous step it charges `used` (what the requests
	 * settled since the last renewal actually used) and drops the old reservation, then reserves `held`
	 * (the estimates of its requests still in flight) plus a grant for new requests: up to `want`, at
	 * least `atLeast`, within what is left of each limit; if not even `atLeast` fits, it grants nothing
	 * and refuses. A lease that had already expired was charged its whole amount then: its `used` and
	 * `held` are covered by that charge, so neither is charged or reserved again (`expired` tells the
	 * isolate to forget them). The invariant of {@link reserve} holds: every estimate in flight is
	 * reserved, and only settlements above their estimates overshoot.
	 */
	renew(request: RenewBudgetInput, clock: number, options: { keepEmpty?: boolean } = {}): RenewBudgetResult {
		const { budget, used, held, want, atLeast, ttlMs } = request;
		const now = this.#advance(clock);
		const resetMs = monthEnd(now) - now;
		const old = request.leaseId === undefined ? undefined : this.#reservations.get(request.leaseId);
		const expired = request.leaseId !== undefined && old === undefined;
		if (old) {
			this.#close(old, used.tokens, used.microUsd);
		} else if (!expired) {
			// A lease that holds no reservation (it was refused with nothing in flight) still reports usage.
			this.#row.usedTokens += used.tokens;
			this.#row.usedMicroUsd += used.microUsd;
		}
		const keep = expired ? { tokens: 0, microUsd: 0 } : held;
		const row = this.#row;
		const tokensLeft = left(budget.monthlyTokens, row.usedTokens, this.#reservedTokens + keep.tokens);
		const costLeft = left(budget.monthlyMicroUsd, row.usedMicroUsd, this.#reservedMicroUsd + keep.microUsd);
		const limitedBy =
			tokensLeft !== null && atLeast.tokens > tokensLeft
				? "tokens"
				: costLeft !== null && atLeast.microUsd > costLeft
					? "cost"
					: null;
		const grant = limitedBy
			? { tokens: 0, microUsd: 0 }
			: {
					tokens: tokensLeft === null ? want.tokens : Math.min(want.tokens, tokensLeft),
					microUsd: costLeft === null ? want.microUsd : Math.min(want.microUsd, costLeft),
				};
		let leaseId: string | null = null;
		const tokens = keep.tokens + grant.tokens;
		const microUsd = keep.microUsd + grant.microUsd;
		if (tokens > 0 || microUsd > 0 || (options.keepEmpty && !limitedBy)) {
			const reservation: ReservationRow = {
				id: this.#newId(),
				tokens,
				microUsd,
				expiresAt: now + ttlMs,
				period: row.period,
			};
			this.#reservations.set(reservation.id, reservation);
			this.#reservedTokens += tokens;
			this.#reservedMicroUsd += microUsd;
			this.#nextExpiry = Math.min(this.#nextExpiry, reservation.expiresAt);
			this.#store?.saveReservation(reservation);
			leaseId = reservation.id;
		}
		this.#store?.saveBudget({ ...row });
		const remainingTokens = tokensLeft === null ? null : Math.max(0, tokensLeft - grant.tokens);
		const remainingMicroUsd = costLeft === null ? null : Math.max(0, costLeft - grant.microUsd);
		if (limitedBy) {
			const spent =
				(budget.monthlyTokens !== null && row.usedTokens + atLeast.tokens > budget.monthlyTokens) ||
				(budget.monthlyMicroUsd !== null && row.usedMicroUsd + atLeast.microUsd > budget.monthlyMicroUsd);
			return {
				ok: false,
				leaseId,
				expired,
				limitedBy,
				remainingTokens,
				remainingMicroUsd,
				resetMs,
				retryAfterMs: spent ? resetMs : Math.min(resetMs, RESERVED_RETRY_MS),
			};
		}
		return { ok: true, leaseId, expired, grant, remainingTokens, remainingMicroUsd, resetMs };
	}

	/** Replaces a reservation by the actual usage; a reservation already settled or expired is not charged again. */
	settle(request: { reservationId: string; tokens: number; microUsd: number }, clock: number): BudgetSettlement {
		this.#advance(clock);
		const reservation = this.#reservations.get(request.reservationId);
		if (reservation) this.#close(reservation, request.tokens, request.microUsd);
		this.#store?.saveBudget({ ...this.#row });
		return { settled: reservation !== undefined, ...this.#totals() };
	}

	/** The bookkeeping as of `clock` (expired reservations charged first). */
	state(clock: number): BudgetState {
		this.#advance(clock);
		this.#store?.saveBudget({ ...this.#row });
		return { ...this.#totals(), reservations: this.#reservations.size };
	}
}

/**
 * Creates `table` WITHOUT ROWID: keyed by a text id, each insert or delete then writes one row, not a
 * row and an index entry. An object made before keeps its rows: its table (same columns, in the same
 * order, keyed by `id`) is rebuilt once.
 */
function withoutRowid(sql: Pick<SqlStorage, "exec">, table: string, columns: string): void {
	const existing = sql
		.exec<{ sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", table)
		.toArray()[0];
	if (existing && /WITHOUT ROWID\s*$/i.test(existing.sql)) return;
	sql.exec(`CREATE TABLE ${table}_rebuilt (${columns}) WITHOUT ROWID`);
	if (existing) {
		// A rowid table let a NULL id in, which a WITHOUT ROWID key refuses: such a row (unreachable by id) is dropped.
		sql.exec(`INSERT INTO ${table}_rebuilt SELECT * FROM ${table} WHERE id IS NOT NULL`);
		sql.exec(`DROP TABLE ${table}`);
	}
	sql.exec(`ALTER TABLE ${table}_rebuilt RENAME TO ${table}`);
}

/**
 * The Durable Object: one {@link LeasedBucket} per limited subject and, for tenants, one
 * {@link BudgetLedger} for the monthly LLM budget, both persisted in SQLite.
 */
export class RateLimiter extends DurableObject<Env> {
	#bucket: LeasedBucket = new LeasedBucket();
	#budget: BudgetLedger = new BudgetLedger();
	readonly #sql: SqlMeter;

	constructor(ctx: DurableObjectState, env: Env) {
		super(ctx, env);
		this.#sql = new SqlMeter(ctx.storage.sql);
		ctx.blockConcurrencyWhile(async () => {
			this.#bucket = this.#load(this.#sql);
			this.#budget = this.#loadBudget(this.#sql);
		});
	}

	#load(sql: Pick<SqlStorage, "exec">): LeasedBucket {
		sql.exec(`CREATE TABLE IF NOT EXISTS bucket (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			available REAL NOT NULL, outstanding INTEGER NOT NULL, updated_at REAL NOT NULL,
			quota_used INTEGER NOT NULL, period TEXT NOT NULL)`);
		withoutRowid(
			sql,
			"leases",
			"id TEXT PRIMARY KEY, tokens INTEGER NOT NULL, expires_at REAL NOT NULL, period TEXT NOT NULL, expired INTEGER NOT NULL DEFAULT 0",
		);
		const row = sql
			.exec<{ available: number; outstanding: number; updated_at: number; quota_used: number; period: string }>(
				"SELECT available, outstanding, updated_at, quota_used, period FROM bucket WHERE id = 1",
			)
			.toArray()[0];
		const leases = sql
			.exec<{ id: string; tokens: number; expires_at: number; period: string; expired: number }>(
				"SELECT id, tokens, expires_at, period, expired FROM leases",
			)
			.toArray()
			.map((l) => ({
				id: l.id,
				tokens: l.tokens,
				expiresAt: l.expires_at,
				period: l.period,
				expired: l.expired === 1,
			}));
		const store: BucketStore = {
			saveBucket: (b) =>
				sql.exec(
					`INSERT INTO bucket (id, available, outstanding, updated_at, quota_used, period) VALUES (1, ?, ?, ?, ?, ?)
					 ON CONFLICT(id) DO UPDATE SET available = excluded.available, outstanding = excluded.outstanding,
					 updated_at = excluded.updated_at, quota_used = excluded.quota_used, period = excluded.period`,
					b.available,
					b.outstanding,
					b.updatedAt,
					b.quotaUsed,
					b.period,
				),
			saveLease: (l) =>
				sql.exec(
					`INSERT INTO leases (id, tokens, expires_at, period, expired) VALUES (?, ?, ?, ?, ?)
					 ON CONFLICT(id) DO UPDATE SET expired = excluded.expired`,
					l.id,
					l.tokens,
					l.expiresAt,
					l.period,
					l.expired ? 1 : 0,
				),
			deleteLease: (id) => sql.exec("DELETE FROM leases WHERE id = ?", id),
		};
		return new LeasedBucket({
			bucket: row
				? {
						available: row.available,
						outstanding: row.outstanding,
						updatedAt: row.updated_at,
						quotaUsed: row.quota_used,
						period: row.period,
					}
				: undefined,
			leases,
			store,
		});
	}

	#loadBudget(sql: Pick<SqlStorage, "exec">): BudgetLedger {
		sql.exec(`CREATE TABLE IF NOT EXISTS budget (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			used_tokens INTEGER NOT NULL, used_micro_usd INTEGER NOT NULL, period TEXT NOT NULL, clock REAL NOT NULL)`);
		withoutRowid(
			sql,
			"budget_reservations",
			"id TEXT PRIMARY KEY, tokens INTEGER NOT NULL, micro_usd INTEGER NOT NULL, expires_at REAL NOT NULL, period TEXT NOT NULL",
		);
		const row = sql
			.exec<{ used_tokens: number; used_micro_usd: number; period: string; clock: number }>(
				"SELECT used_tokens, used_micro_usd, period, clock FROM budget WHERE id = 1",
			)
			.toArray()[0];
		const reservations = sql
			.exec<{ id: string; tokens: number; micro_usd: number; expires_at: number; period: string }>(
				"SELECT id, tokens, micro_usd, expires_at, period FROM budget_reservations",
			)
			.toArray()
			.map((r) => ({ id: r.id, tokens: r.tokens, microUsd: r.micro_usd, expiresAt: r.expires_at, period: r.period }));
		const store: BudgetStore = {
			saveBudget: (b) =>
				sql.exec(
					`INSERT INTO budget (id, used_tokens, used_micro_usd, period, clock) VALUES (1, ?, ?, ?, ?)
					 ON CONFLICT(id) DO UPDATE SET used_tokens = excluded.used_tokens,
					 used_micro_usd = excluded.used_micro_usd, period = excluded.period, clock = excluded.clock`,
					b.usedTokens,
					b.usedMicroUsd,
					b.period,
					b.clock,
				),
			saveReservation: (r) =>
				sql.exec(
					"INSERT INTO budget_reservations (id, tokens, micro_usd, expires_at, period) VALUES (?, ?, ?, ?, ?)",
					r.id,
					r.tokens,
					r.microUsd,
					r.expiresAt,
					r.period,
				),
			deleteReservation: (id) => sql.exec("DELETE FROM budget_reservations WHERE id = ?", id),
		};
		return new BudgetLedger({
			budget: row
				? { usedTokens: row.used_tokens, usedMicroUsd: row.used_micro_usd, period: row.period, clock: row.clock }
				: undefined,
			reservations,
			store,
		});
	}

	/**
	 * Takes back returned leases, retires expired ones and grants a new lease of up to `want` tokens.
	 * Synchronous from start to end, so two calls never interleave.
	 */
	acquire(input: AcquireRequest): Grant {
		return this.#bucket.acquire(AcquireRequestSchema.parse(input), Date.now());
	}

	/** The object's bookkeeping, for operators and tests. */
	state(): LimiterState {
		return this.#bucket.state();
	}

	/**
	 * Reserves an LLM request's estimated tokens and cost against the monthly budget, or refuses.
	 * Synchronous from start to end, so concurrent reservations can never together exceed the budget.
	 */
	reserveBudget(input: ReserveBudgetRequest): ReserveBudgetResult {
		const request = ReserveBudgetRequestSchema.parse(input);
		return this.#budget.reserve(request, request.now ?? Date.now());
	}

	/** Renews an isolate's budget lease: charges what it used, keeps what is in flight, grants more or refuses. */
	renewBudgetLease(input: RenewBudgetRequest): RenewBudgetResult {
		const request = RenewBudgetRequestSchema.parse(input);
		return this.#budget.renew(request, request.now ?? Date.now());
	}

	/** Replaces a reservation by the request's actual usage. Idempotent: a reservation is charged once. */
	settleBudget(input: SettleBudgetRequest): BudgetSettlement {
		const request = SettleBudgetRequestSchema.parse(input);
		return this.#budget.settle(request, request.now ?? Date.now());
	}

	/** The budget's bookkeeping, for operators and tests. */
	budgetState(input: BudgetStateRequest = {}): BudgetState {
		const request = BudgetStateRequestSchema.parse(input);
		return this.#budget.state(request.now ?? Date.now());
	}

	/** SQLite rows this object has written since it started (benchmarks and tests: bench/rows.mjs). */
	rowsWritten(): number {
		return this.#sql.rowsWritten;
	}
}

/** The RateLimiter stub for a tenant or a key (names come from {@link rateLimiterName}). */
export function rateLimiterFor(env: Env, subject: { tenantId: string } | { keyId: string }) {
	return env.RATE_LIMITER.getByName(rateLimiterName(subject));
}
