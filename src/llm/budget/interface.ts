/**
 * Monthly LLM budgets (tokens and micro-dollars): the RPC contract with the tenant's RateLimiter Durable
 * Object (durable-objects/rate-limiter.ts), which keeps the ledger (ledger.ts) in its own tables beside
 * the tenant's bucket and imports this contract from here.
 */
import { z } from "zod";
import { LlmBudgetSchema } from "../../config";

/** A reservation's default life: longer than any call's total deadline, so expiry is a fallback. */
export const DEFAULT_RESERVATION_TTL_MS = 15 * 60 * 1000;
/** The longest a reservation may hold budget before it is charged. */
export const MAX_RESERVATION_TTL_MS = 60 * 60 * 1000;

const amount = z.number().int().min(0);

export const ReserveBudgetRequestSchema = z.object({
	budget: LlmBudgetSchema,
	/** The request's estimated tokens (prompt + most output) and cost. */
	tokens: amount,
	microUsd: amount,
	ttlMs: z.number().int().min(1000).max(MAX_RESERVATION_TTL_MS).default(DEFAULT_RESERVATION_TTL_MS),
});
export type ReserveBudgetRequest = z.input<typeof ReserveBudgetRequestSchema>;

export const SettleBudgetRequestSchema = z.object({
	reservationId: z.string().min(1).max(64),
	/** What the request actually used. */
	tokens: amount,
	microUsd: amount,
});
export type SettleBudgetRequest = z.input<typeof SettleBudgetRequestSchema>;

const pair = z.object({ tokens: amount, microUsd: amount });

export const RenewBudgetRequestSchema = z.object({
	budget: LlmBudgetSchema,
	/** The lease being renewed; absent for the isolate's first. */
	leaseId: z.string().min(1).max(64).optional(),
	/** Used by the requests settled since the last renewal: charged now. */
	used: pair,
	/** Estimates of the requests still in flight: kept reserved. */
	held: pair,
	/** Room wanted for new requests, and the least worth having (this request's estimate). */
	want: pair,
	atLeast: pair,
	ttlMs: z.number().int().min(1000).max(MAX_RESERVATION_TTL_MS).default(DEFAULT_RESERVATION_TTL_MS),
});
export type RenewBudgetRequest = z.input<typeof RenewBudgetRequestSchema>;
export type RenewBudgetInput = z.output<typeof RenewBudgetRequestSchema>;

/** What the object answers to a renewal: the room granted, or a refusal by the limit `atLeast` would exceed. */
export type RenewBudgetResult =
	| ({ ok: true; grant: { tokens: number; microUsd: number } } & RenewCommon)
	| ({ ok: false; limitedBy: "tokens" | "cost"; retryAfterMs: number } & RenewCommon);

export interface RenewCommon {
	/** The lease's reservation now (null when it holds nothing). */
	leaseId: string | null;
	/** The renewed lease had expired and been charged whole: forget what it held and used. */
	expired: boolean;
	remainingTokens: number | null;
	remainingMicroUsd: number | null;
	resetMs: number;
}

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
	renewBudgetLease(input: RenewBudgetRequest): Promise<RenewBudgetResult>;
}
