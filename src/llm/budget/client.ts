/**
 * The isolate's side of monthly LLM budgets (tokens and micro-dollars; the ledger and its proof of
 * exactness are in ledger.ts). A request *reserves* its estimate before the provider is called and
 * *settles* its actual usage afterwards; the budget lives in the tenant's RateLimiter object, beside
 * its rate limiter.
 *
 * Leases. Like admission (src/ratelimit/lease-client.ts), an isolate does not go to the object for
 * every request: it holds one *budget lease* per tenant, a reservation in the object that its requests reserve their
 * estimates from in memory and settle into in memory. It renews the lease when a request's estimate no
 * longer fits or the lease is older than `leaseMs`, and reports in the same call what its requests
 * used: the object charges that, keeps the estimates of requests still in flight reserved, and grants
 * room for about `headroom` requests plus one per request waiting (less near the limit; nothing, a
 * refusal, if not even this request's estimate fits). After `leaseMs` without renewal, the isolate reports and gives the room
 * back (from the renewing request's `waitUntil`), and a request settling on a lease past its time
 * reports at once. Exactness is the ledger's: every estimate in flight is reserved in the object, so
 * concurrency never overshoots; only requests that use more than they reserved do, by that excess.
 * The price is the ledger's too, a little larger: room another isolate holds is refused here until it
 * is given back (at most `leaseMs` plus a request), and an isolate that dies holding a lease is charged
 * the lease whole when it expires (its requests in flight and its unused room, never less than used);
 * so is a lease whose renewal went unanswered (a late grant is shrunk back to what was in flight). A
 * request in flight across a month's end is charged to the new month, where its lease was renewed.
 *
 * A budget with both limits null is unlimited: the client then makes no Durable Object call at all.
 * Usage is recorded elsewhere in every case (a usage event per request, stored in D1); the ledger
 * exists only to enforce limits.
 */
import type { LlmBudget } from "../../config";
import { log, type WaitUntil } from "../../http";
import { errorMessage, Lru, perIsolate, sleep, TIMED_OUT, within } from "../../lib";
import { rateLimiterFor, rateLimiterName } from "../../ratelimit";
import type { BudgetStub, RenewBudgetResult, RenewCommon, ReserveBudgetResult } from "./interface";

type Amount = { tokens: number; microUsd: number };
const NONE: Amount = { tokens: 0, microUsd: 0 };
const plus = (a: Amount, b: Amount): Amount => ({ tokens: a.tokens + b.tokens, microUsd: a.microUsd + b.microUsd });
const minus = (a: Amount, b: Amount): Amount => ({ tokens: a.tokens - b.tokens, microUsd: a.microUsd - b.microUsd });
const fits = (need: Amount, room: Amount): boolean => need.tokens <= room.tokens && need.microUsd <= room.microUsd;

/** An isolate's lease on one tenant's budget. */
interface Lease {
	readonly name: string;
	readonly budget: LlmBudget;
	/** The lease's reservation in the object, if it holds one. */
	id: string | null;
	/** Bumped when the lease is given up or found expired: reservations of an older epoch settle into nothing. */
	epoch: number;
	/** What the object reserved for the lease at its last renewal. */
	amount: Amount;
	/** Used by requests settled since the last renewal. */
	used: Amount;
	/** Estimates of requests in flight. */
	held: Amount;
	/** Requests reserve from the lease until this (isolate clock, from when the renewal was sent). */
	until: number;
	renewal: { promise: Promise<void>; startedAt: number } | null;
	/** Requests waiting for a renewal. */
	waiting: number;
	last: Pick<RenewCommon, "remainingTokens" | "remainingMicroUsd" | "resetMs">;
}

/** A granted reservation, handed back to {@link Budgets.settle}. */
export interface BudgetReservation {
	/** The Durable Object holding the budget. */
	name: string;
	tokens: number;
	microUsd: number;
	/** The lease it was taken from (null for an unlimited budget) and that lease's epoch then. */
	lease: Lease | null;
	epoch: number;
}

/**
 * The client's answer: a reservation to settle (with what was left as of the lease's last renewal), the
 * object's refusal, or `unavailable`.
 */
export type BudgetDecision =
	| ({ ok: true; reservation: BudgetReservation } & Omit<
			Extract<ReserveBudgetResult, { ok: true }>,
			"ok" | "reservationId"
	  >)
	| Extract<ReserveBudgetResult, { ok: false }>
	/** The object could not be reached or did not answer in time: the call must not be made (503). */
	| { ok: false; limitedBy: "unavailable"; reason: string };

/** Reserves before an LLM call and settles after it. */
export interface Budgets {
	reserve(
		tenantId: string,
		budget: LlmBudget,
		estimate: { tokens: number; microUsd: number },
		waitUntil?: WaitUntil,
	): Promise<BudgetDecision>;
	/** Replaces the reservation by the actual usage. Never throws: on failure the lease's expiry charges it. */
	settle(reservation: BudgetReservation, actual: { tokens: number; microUsd: number }): Promise<void>;
	/** Reports every idle lease's usage and gives its room back now (tests, and an isolate winding down). */
	flush(): Promise<void>;
}

export interface BudgetClientOptions {
	/** Makes a stub for one call. A stub belongs to the request that made it: never cache one across requests. */
	stub: (name: string) => BudgetStub;
	/** A call to the object that has not answered after this long counts as failed. */
	timeoutMs?: number;
	/** How long a lease is reserved from before it is renewed (and, idle, reported). */
	leaseMs?: number;
	/** Room asked for at a renewal, in estimates of the request that renews (itself included), plus one per request waiting. */
	headroom?: number;
	now?: () => number;
}

/** Upper bound on renewals one request waits through; each grants room or refuses. */
const MAX_PASSES = 64;
/** Most leases an isolate keeps; the least recently used is forgotten (its lease expires in the object, charged whole). */
const MAX_LEASES = 10_000;

/** Whole, non-negative units: estimates are rounded up so a budget is never undercharged. */
function whole(n: number): number {
	return Number.isFinite(n) && n > 0 ? Math.ceil(n) : 0;
}

function unlimited(budget: LlmBudget): boolean {
	return budget.monthlyTokens === null && budget.monthlyMicroUsd === null;
}

/** What a lease has left for new requests: what the object reserved, less what was used and what is in flight. */
function room(lease: Lease): Amount {
	return minus(minus(lease.amount, lease.used), lease.held);
}

/** Whether the object should hear from the lease: usage to charge, or room beyond what is in flight to give back. */
function owes(lease: Lease): boolean {
	const spare = minus(lease.amount, lease.held);
	return lease.used.tokens > 0 || lease.used.microUsd > 0 || spare.tokens > 0 || spare.microUsd > 0;
}

/** Reserves `need` from the lease's room (the caller has checked it fits). */
function take(lease: Lease, need: Amount): BudgetDecision {
	lease.held = plus(lease.held, need);
	return { ok: true, reservation: { name: lease.name, ...need, lease, epoch: lease.epoch }, ...lease.last };
}

/** Budgets over RateLimiter objects, through one lease per tenant and budget in this isolate; see {@link budgetsFor}. */
export class BudgetClient implements Budgets {
	readonly #leases = new Lru<string, Lease>(MAX_LEASES);
	readonly #stub: (name: string) => BudgetStub;
	readonly #timeout: number;
	readonly #leaseMs: number;
	readonly #headroom: number;
	readonly #now: () => number;

	constructor(options: BudgetClientOptions) {
		this.#stub = options.stub;
		this.#timeout = options.timeoutMs ?? 1000;
		this.#leaseMs = options.leaseMs ?? 1000;
		this.#headroom = options.headroom ?? 4;
		this.#now = options.now ?? Date.now;
		if (!(this.#timeout > 0) || !(this.#leaseMs >= 0) || !(this.#headroom >= 1)) {
			throw new Error("BudgetClient: invalid options");
		}
	}

	#lease(name: string, budget: LlmBudget): Lease {
		const key = `${name} ${budget.monthlyTokens} ${budget.monthlyMicroUsd}`;
		let lease = this.#leases.get(key);
		if (!lease) {
			lease = {
				name,
				budget,
				id: null,
				epoch: 0,
				amount: NONE,
				used: NONE,
				held: NONE,
				until: 0,
				renewal: null,
				waiting: 0,
				last: { remainingTokens: null, remainingMicroUsd: null, resetMs: 0 },
			};
			this.#leases.set(key, lease);
		}
		return lease;
	}

	async reserve(
		tenantId: string,
		budget: LlmBudget,
		estimate: { tokens: number; microUsd: number },
		waitUntil?: WaitUntil,
	): Promise<BudgetDecision> {
		const name = rateLimiterName({ tenantId });
		const need = { tokens: whole(estimate.tokens), microUsd: whole(estimate.microUsd) };
		if (unlimited(budget)) {
			const reservation = { name, ...need, lease: null, epoch: 0 };
			return { ok: true, reservation, remainingTokens: null, remainingMicroUsd: null, resetMs: 0 };
		}
		const lease = this.#lease(name, budget);
		for (let pass = 0; pass < MAX_PASSES; pass++) {
			// Never while a renewal is out: it reports what is in flight as of its sending, and a request
			// taken after that would be reserved nowhere if the renewal shrinks the lease.
			if (!lease.renewal && this.#now() < lease.until && fits(need, room(lease))) return take(lease, need);
			this.#dropStale(lease);
			if (lease.renewal) {
				lease.waiting++;
				// Timed out, the next pass finds the renewal stale and starts afresh.
				await within(lease.renewal.promise, this.#timeout).finally(() => lease.waiting--);
				continue;
			}
			const requests = this.#headroom + lease.waiting;
			const want = { tokens: need.tokens * requests, microUsd: need.microUsd * requests };
			const answer = await this.#renew(lease, want, need, waitUntil);
			if (typeof answer === "string") return this.#unavailable(name, answer);
			// The renewing request takes its share of the room it was granted, however short the lease.
			if (answer.ok && !lease.renewal && fits(need, room(lease))) return take(lease, need);
			if (!answer.ok) {
				const { limitedBy, remainingTokens, remainingMicroUsd, resetMs, retryAfterMs } = answer;
				return { ok: false, limitedBy, remainingTokens, remainingMicroUsd, resetMs, retryAfterMs };
			}
		}
		return this.#unavailable(name, `no budget lease room after ${MAX_PASSES} renewals`);
	}

	#unavailable(limiter: string, reason: string): BudgetDecision {
		log("warn", "llm budget unavailable; refusing the call", { limiter, reason });
		return { ok: false, limitedBy: "unavailable", reason };
	}

	/** A renewal older than the timeout belongs to a request that may have been cancelled: gives it up. */
	#dropStale(lease: Lease): void {
		if (lease.renewal && this.#now() - lease.renewal.startedAt >= this.#timeout) this.#abandon(lease);
	}

	/** Forgets the lease's reservation and what it holds: the object charges the reservation whole when it expires. */
	#abandon(lease: Lease): void {
		lease.id = null;
		lease.epoch++;
		lease.amount = NONE;
		lease.used = NONE;
		lease.held = NONE;
		lease.until = 0;
		lease.renewal = null;
	}

	/**
	 * One renewal: reports what the lease's requests used, keeps what is in flight, asks for `want`
	 * (at least `atLeast`). Answers the object's answer, or why it could not be had. Shared with the
	 * requests that wait for it; while it is out, settlements only update the lease in memory.
	 */
	async #renew(
		lease: Lease,
		want: Amount,
		atLeast: Amount,
		waitUntil: WaitUntil | undefined,
	): Promise<RenewBudgetResult | string> {
		const sent = { used: lease.used, held: lease.held, epoch: lease.epoch };
		const sentAt = this.#now();
		let finish = () => {};
		const renewal = { promise: new Promise<void>((resolve) => (finish = resolve)), startedAt: sentAt };
		lease.renewal = renewal;
		let outcome: RenewBudgetResult | string;
		const stub = this.#stub(lease.name);
		/** Shrinks a grant this lease no longer uses to what was in flight when it was asked for. */
		const release = (late: RenewBudgetResult) => {
			if (late.leaseId === null) return;
			const shrink = stub
				.renewBudgetLease({
					budget: lease.budget,
					leaseId: late.leaseId,
					used: NONE,
					held: late.expired ? NONE : sent.held,
					want: NONE,
					atLeast: NONE,
				})
				.catch(() => undefined);
			if (waitUntil) waitUntil(shrink);
		};
		try {
			const pending = stub.renewBudgetLease({
				budget: lease.budget,
				...(lease.id ? { leaseId: lease.id } : {}),
				used: sent.used,
				held: sent.held,
				want,
				atLeast,
			});
			const answer = await within(pending, this.#timeout);
			if (answer === TIMED_OUT) {
				// Given up below: if it was granted after all, shrink it at once to what was in flight when sent.
				const late = pending.then(release, () => undefined);
				if (waitUntil) waitUntil(late);
				outcome = `the rate limiter did not answer within ${this.#timeout} ms`;
			} else {
				outcome = answer;
			}
		} catch (err) {
			outcome = errorMessage(err);
		}
		if (lease.renewal !== renewal) {
			// Another request gave this renewal up meanwhile (it looked stale): its grant is nobody's.
			if (typeof outcome !== "string") release(outcome);
			outcome = "the budget lease renewal was given up";
		} else {
			lease.renewal = null;
			if (typeof outcome === "string" || lease.epoch !== sent.epoch) {
				// Whether the object applied it is unknown: start afresh; the old reservation expires, charged whole.
				this.#abandon(lease);
			} else {
				const { remainingTokens, remainingMicroUsd, resetMs } = outcome;
				lease.last = { remainingTokens, remainingMicroUsd, resetMs };
				lease.id = outcome.leaseId;
				if (outcome.expired) {
					// Everything taken before this renewal was charged with the expired reservation.
					lease.epoch++;
					lease.used = NONE;
					lease.held = NONE;
					lease.amount = outcome.ok ? outcome.grant : NONE;
				} else {
					// Settlements that came in meanwhile stay to be reported next time.
					lease.used = minus(lease.used, sent.used);
					lease.amount = plus(sent.held, outcome.ok ? outcome.grant : NONE);
				}
				// A report (nothing wanted) leaves nothing to reserve from: the next request renews.
				const granted = outcome.ok && (want.tokens > 0 || want.microUsd > 0);
				lease.until = granted ? sentAt + this.#leaseMs : 0;
				if (granted && waitUntil) waitUntil(this.#returnWhenIdle(lease));
			}
		}
		finish();
		return outcome;
	}

	/** After the lease's time, unless a later renewal extended it, reports its usage and gives its room back. */
	async #returnWhenIdle(lease: Lease): Promise<void> {
		await sleep(this.#leaseMs);
		// A renewal on its way may be refused and leave nothing scheduled: wait for it, then decide.
		if (!(await this.#quiet(lease)) || this.#now() < lease.until || !owes(lease)) return;
		await this.#report(lease);
	}

	/** Waits for a renewal on its way, giving up one that has gone stale; true once none is out. */
	async #quiet(lease: Lease): Promise<boolean> {
		for (let pass = 0; lease.renewal && pass < 3; pass++) {
			await within(lease.renewal.promise, this.#timeout);
			this.#dropStale(lease);
		}
		return !lease.renewal;
	}

	/** Reports the lease's usage and keeps only what is in flight reserved. Never throws. */
	async #report(lease: Lease): Promise<void> {
		const answer = await this.#renew(lease, NONE, NONE, undefined);
		if (typeof answer === "string") {
			log("warn", "llm budget lease not reported; its reservation's expiry will charge it", {
				limiter: lease.name,
				reason: answer,
			});
		}
	}

	async settle(reservation: BudgetReservation, actual: { tokens: number; microUsd: number }): Promise<void> {
		const lease = reservation.lease;
		// Unlimited, or taken from a lease since given up or expired: its charge covered this request.
		if (!lease || reservation.epoch !== lease.epoch) return;
		lease.held = minus(lease.held, reservation);
		lease.used = plus(lease.used, { tokens: whole(actual.tokens), microUsd: whole(actual.microUsd) });
		// Past its time, nobody may report this soon: report it here (after a renewal already on its way,
		// unless that one renewed the lease, or gave it up with this request's epoch).
		if (this.#now() < lease.until || !(await this.#quiet(lease))) return;
		if (reservation.epoch === lease.epoch && this.#now() >= lease.until && owes(lease)) await this.#report(lease);
	}

	async flush(): Promise<void> {
		for (const lease of [...this.#leases.values()]) {
			if (!(await this.#quiet(lease))) continue;
			lease.until = 0;
			if (owes(lease)) await this.#report(lease);
		}
	}
}

const budgetClients = perIsolate((RATE_LIMITER: Env["RATE_LIMITER"]) => {
	const env = { RATE_LIMITER };
	return new BudgetClient({ stub: (name) => rateLimiterFor(env, name) });
});

/** The isolate's budget client over the RATE_LIMITER namespace (the tenant's rate-limiter object). */
export function budgetsFor(env: Pick<Env, "RATE_LIMITER">): Budgets {
	return budgetClients(env.RATE_LIMITER);
}
