/**
 * The budget ledger: the exact bookkeeping behind a tenant's monthly LLM budget, as a pure machine with
 * the clock passed in. The tenant's RateLimiter object (durable-objects/rate-limiter.ts) persists it in
 * its own tables; the isolate's client (client.ts) renews leases on it.
 */
import type { LlmBudget } from "../../config";
import { monthEnd, monthKey } from "../../ratelimit";
import type {
	BudgetSettlement,
	BudgetState,
	BudgetTotals,
	RenewBudgetInput,
	RenewBudgetResult,
	ReserveBudgetResult,
} from "./interface";

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

	/**
	 * Reserves one request's estimate if it fits in what is left of each limit this month: a lease granted
	 * exactly that. Isolates use {@link renew}; this single-reservation form (with {@link settle}) is what the
	 * ledger's exactness tests drive, and a lease is checked against the same invariant.
	 */
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
	 * Renews an isolate's budget lease (client.ts): one reservation that the isolate
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
