/**
 * Monthly LLM budgets (tokens and micro-dollars): the RPC contract with the RateLimiter Durable Object
 * (durable-objects/rate-limiter.ts, which holds the ledger and the proof of exactness) and the
 * isolate's client. A request *reserves* its estimate before the provider is called and *settles*
 * its actual usage afterwards; a reservation never settled is charged its reserved amount when it
 * expires. The budget lives in the same object as the tenant's rate limiter.
 *
 * A budget with both limits null is unlimited: the client then makes no Durable Object call at all,
 * neither to reserve nor to settle. Usage is recorded elsewhere in every case (a usage event per
 * request, stored in D1); the ledger exists only to enforce limits.
 */
import { z } from "zod";
import { type LlmBudget, LlmBudgetSchema } from "../config";
import { log, TIMED_OUT, within } from "../http";
import { rateLimiterName } from "./interface";

/** A reservation's default life: longer than any call's total deadline, so expiry is a fallback. */
export const DEFAULT_RESERVATION_TTL_MS = 15 * 60 * 1000;
/** The longest a reservation may hold budget before it is charged. */
export const MAX_RESERVATION_TTL_MS = 60 * 60 * 1000;

const amount = z.number().int().min(0);
/** Test and simulation hook: the time to decide at. The object never lets its clock run backwards. */
const clock = z.number().finite().nonnegative().optional();

export const ReserveBudgetRequestSchema = z.object({
	budget: LlmBudgetSchema,
	/** The request's estimated tokens (prompt + most output) and cost. */
	tokens: amount,
	microUsd: amount,
	ttlMs: z.number().int().min(1000).max(MAX_RESERVATION_TTL_MS).default(DEFAULT_RESERVATION_TTL_MS),
	now: clock,
});
export type ReserveBudgetRequest = z.input<typeof ReserveBudgetRequestSchema>;

export const SettleBudgetRequestSchema = z.object({
	reservationId: z.string().min(1).max(64),
	/** What the request actually used. */
	tokens: amount,
	microUsd: amount,
	now: clock,
});
export type SettleBudgetRequest = z.input<typeof SettleBudgetRequestSchema>;

export const BudgetStateRequestSchema = z.object({ now: clock }).default({});
export type BudgetStateRequest = z.input<typeof BudgetStateRequestSchema>;

/** What the object answers to a reservation: granted, or refused by the limit it would exceed. */
export type ReserveBudgetResult =
	| {
			ok: true;
			reservationId: string;
			/** Left this month after this reservation (null = unlimited). */
			remainingTokens: number | null;
			remainingMicroUsd: number | null;
			/** Milliseconds until the month (UTC) ends and the budget resets. */
			resetMs: number;
	  }
	| {
			ok: false;
			limitedBy: "tokens" | "cost";
			remainingTokens: number | null;
			remainingMicroUsd: number | null;
			resetMs: number;
			/**
			 * When to try again: the month's end if usage alone leaves no room; a short hint if the room
			 * is held by reservations in flight, which may settle for less than they reserved.
			 */
			retryAfterMs: number;
	  };

/** The ledger's totals for the current month (UTC). */
export interface BudgetTotals {
	period: string;
	usedTokens: number;
	usedMicroUsd: number;
	/** Held by reservations of this month not yet settled or expired. */
	reservedTokens: number;
	reservedMicroUsd: number;
}

/** What the object answers to a settlement. `settled` is false when the reservation was already settled or expired. */
export interface BudgetSettlement extends BudgetTotals {
	settled: boolean;
}

/** The ledger's bookkeeping, for operators and tests. */
export interface BudgetState extends BudgetTotals {
	/** Reservations not yet settled or expired (of any month). */
	reservations: number;
}

/** What the client needs of a RateLimiter stub. */
export interface BudgetStub {
	reserveBudget(input: ReserveBudgetRequest): Promise<ReserveBudgetResult>;
	settleBudget(input: SettleBudgetRequest): Promise<BudgetSettlement>;
}

/** A granted reservation, handed back to {@link Budgets.settle}. `id` is null when the budget is unlimited. */
export interface BudgetReservation {
	id: string | null;
	/** The Durable Object holding it. */
	name: string;
	tokens: number;
	microUsd: number;
}

/** The client's answer: the object's, with the grant turned into a reservation to settle, or `unavailable`. */
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
	reserve(tenantId: string, budget: LlmBudget, estimate: { tokens: number; microUsd: number }): Promise<BudgetDecision>;
	/** Replaces the reservation by the actual usage. Never throws: on failure the reservation's expiry charges it. */
	settle(reservation: BudgetReservation, actual: { tokens: number; microUsd: number }): Promise<void>;
}

export interface BudgetClientOptions {
	/** Makes a stub for one call. A stub belongs to the request that made it: never cache one across requests. */
	stub: (name: string) => BudgetStub;
	/** A call to the object that has not answered after this long counts as failed. */
	timeoutMs?: number;
}

/** Whole, non-negative units: estimates are rounded up so a budget is never undercharged. */
function whole(n: number): number {
	return Number.isFinite(n) && n > 0 ? Math.ceil(n) : 0;
}

function unlimited(budget: LlmBudget): boolean {
	return budget.monthlyTokens === null && budget.monthlyMicroUsd === null;
}

/** Budgets over RateLimiter objects. Stateless apart from its options; see {@link budgetsFor}. */
export class BudgetClient implements Budgets {
	readonly #stub: (name: string) => BudgetStub;
	readonly #timeout: number;

	constructor(options: BudgetClientOptions) {
		this.#stub = options.stub;
		this.#timeout = options.timeoutMs ?? 1000;
		if (!(this.#timeout > 0)) throw new Error("BudgetClient: invalid options");
	}

	async reserve(
		tenantId: string,
		budget: LlmBudget,
		estimate: { tokens: number; microUsd: number },
	): Promise<BudgetDecision> {
		const name = rateLimiterName({ tenantId });
		const tokens = whole(estimate.tokens);
		const microUsd = whole(estimate.microUsd);
		if (unlimited(budget)) {
			return {
				ok: true,
				reservation: { id: null, name, tokens, microUsd },
				remainingTokens: null,
				remainingMicroUsd: null,
				resetMs: 0,
			};
		}
		let reason: string;
		try {
			// A stub belongs to the request that made it: make one per call, never cache it across requests.
			const stub = this.#stub(name);
			const pending = stub.reserveBudget({ budget, tokens, microUsd });
			const answer = await within(pending, this.#timeout);
			if (answer !== TIMED_OUT) {
				if (!answer.ok) return answer;
				const { reservationId, ...remaining } = answer;
				return { ...remaining, reservation: { id: reservationId, name, tokens, microUsd } };
			}
			// The object may still grant it: release a late grant at once rather than let it expire charged.
			void pending.then(
				(late) => (late.ok ? this.#release(stub, late.reservationId) : undefined),
				() => undefined,
			);
			reason = `the rate limiter did not answer within ${this.#timeout} ms`;
		} catch (err) {
			reason = err instanceof Error ? err.message : String(err);
		}
		log("warn", "llm budget unavailable; refusing the call", { limiter: name, reason });
		return { ok: false, limitedBy: "unavailable", reason };
	}

	async #release(stub: BudgetStub, reservationId: string): Promise<void> {
		try {
			await stub.settleBudget({ reservationId, tokens: 0, microUsd: 0 });
		} catch {
			// Its expiry charges it instead.
		}
	}

	async settle(reservation: BudgetReservation, actual: { tokens: number; microUsd: number }): Promise<void> {
		if (reservation.id === null) return;
		let reason: string;
		try {
			const answer = await within(
				this.#stub(reservation.name).settleBudget({
					reservationId: reservation.id,
					tokens: whole(actual.tokens),
					microUsd: whole(actual.microUsd),
				}),
				this.#timeout,
			);
			if (answer !== TIMED_OUT) return;
			reason = `the rate limiter did not answer within ${this.#timeout} ms`;
		} catch (err) {
			reason = err instanceof Error ? err.message : String(err);
		}
		// Giving up is safe: an unsettled reservation is charged its reserved amount when it expires.
		log("warn", "llm budget settlement failed; the reservation's expiry will charge it", {
			limiter: reservation.name,
			reservationId: reservation.id,
			reason,
		});
	}
}

const clients = new WeakMap<object, BudgetClient>();

/** The isolate's budget client over the RATE_LIMITER namespace (the tenant's rate-limiter object). */
export function budgetsFor(env: Pick<Env, "RATE_LIMITER">): Budgets {
	let client = clients.get(env.RATE_LIMITER);
	if (!client) {
		const ns = env.RATE_LIMITER;
		client = new BudgetClient({ stub: (name) => ns.getByName(name) });
		clients.set(env.RATE_LIMITER, client);
	}
	return client;
}
