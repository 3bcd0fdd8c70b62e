/**
 * Monthly LLM budgets through the real RateLimiter Durable Object (SQLite storage, RPC and its own ledger): exactness
 * under concurrent reservations, settlement, expiry, month rollover, persistence and tenant separation.
 */
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { RateLimiter } from "../../durable-objects/rate-limiter";
import type { LlmBudget } from "../../src/config";
import {
	BudgetClient,
	type BudgetReservation,
	budgetsFor,
	ReserveBudgetRequestSchema,
	SettleBudgetRequestSchema,
} from "../../src/llm/budget";
import { rateLimiterFor } from "../../src/ratelimit";
import { setObjectClock } from "../helpers/object-clock";

const TOKENS_1000: LlmBudget = { monthlyTokens: 1000, monthlyMicroUsd: null };
/** A time ahead of the real clock, for tests that set the object's clock. */
const FUTURE = Date.UTC(2040, 2, 10, 12);

const stubFor = (tenantId: string) => rateLimiterFor(env, { tenantId });
type Stub = ReturnType<typeof stubFor>;
/** One reservation on the object's own ledger, at the object's clock (isolates reserve through leases). */
const reserveIn = (stub: Stub, input: { budget: LlmBudget; tokens: number; microUsd: number; ttlMs?: number }) =>
	runInDurableObject(stub, (o: RateLimiter) => {
		const inside = (o.constructor as typeof RateLimiter).internals(o);
		return inside.ledger.reserve(ReserveBudgetRequestSchema.parse(input), inside.now());
	});
/** Settles a reservation made by {@link reserveIn}. */
const settleIn = (stub: Stub, input: { reservationId: string; tokens: number; microUsd: number }) =>
	runInDurableObject(stub, (o: RateLimiter) => {
		const inside = (o.constructor as typeof RateLimiter).internals(o);
		return inside.ledger.settle(SettleBudgetRequestSchema.parse(input), inside.now());
	});
/** Stops the object's clock at `at`. */
const at = (stub: ReturnType<typeof stubFor>, time: number) => setObjectClock(stub, () => time);

async function reserveMany(tenantId: string, budget: LlmBudget, n: number, tokens: number) {
	const budgets = budgetsFor(env);
	const decisions = await Promise.all(
		Array.from({ length: n }, () => budgets.reserve(tenantId, budget, { tokens, microUsd: 0 })),
	);
	const reservations = decisions.flatMap((d) => (d.ok ? [d.reservation] : []));
	return { decisions, reservations };
}

describe("LLM budgets in the RateLimiter object", () => {
	it("admits exactly 33 of 60 concurrent reservations of 30 tokens against a budget of 1000", async () => {
		const { decisions, reservations } = await reserveMany("budget-exact", TOKENS_1000, 60, 30);
		expect(reservations).toHaveLength(33);
		expect(decisions.find((d) => !d.ok)).toMatchObject({ ok: false, limitedBy: "tokens", remainingTokens: 10 });
		// The isolate's one lease holds all 33 estimates.
		expect(await stubFor("budget-exact").budgetState()).toMatchObject({
			usedTokens: 0,
			reservedTokens: 990,
			reservations: 1,
		});
	});

	it("frees budget for more requests when requests settle for less than they reserved", async () => {
		const budgets = budgetsFor(env);
		const first = await reserveMany("budget-settle-less", TOKENS_1000, 20, 100);
		expect(first.reservations).toHaveLength(10);
		await Promise.all(first.reservations.map((r) => budgets.settle(r, { tokens: 40, microUsd: 0 })));
		await budgets.flush();
		expect(await stubFor("budget-settle-less").budgetState()).toMatchObject({ usedTokens: 400, reservedTokens: 0 });
		const second = await reserveMany("budget-settle-less", TOKENS_1000, 20, 100);
		expect(second.reservations).toHaveLength(6);
	});

	it("overshoots by at most what settlements used beyond their reservations", async () => {
		const budgets = budgetsFor(env);
		const { reservations } = await reserveMany("budget-settle-more", TOKENS_1000, 15, 100);
		expect(reservations).toHaveLength(10);
		await Promise.all(reservations.map((r, i) => budgets.settle(r, { tokens: i < 3 ? 180 : 100, microUsd: 0 })));
		await budgets.flush();
		// Three requests used 80 tokens more than they reserved: 240 over, and nothing more is admitted.
		expect(await stubFor("budget-settle-more").budgetState()).toMatchObject({ usedTokens: 1240, reservedTokens: 0 });
		expect(await budgets.reserve("budget-settle-more", TOKENS_1000, { tokens: 1, microUsd: 0 })).toMatchObject({
			ok: false,
			limitedBy: "tokens",
			remainingTokens: 0,
		});
	});

	it("charges a reservation once when it is settled twice", async () => {
		const stub = stubFor("budget-idempotent");
		const reserved = await reserveIn(stub, { budget: TOKENS_1000, tokens: 300, microUsd: 20 });
		if (!reserved.ok) throw new Error("expected a reservation");
		const settle = { reservationId: reserved.reservationId, tokens: 250, microUsd: 15 };
		expect(await settleIn(stub, settle)).toMatchObject({ settled: true, usedTokens: 250, usedMicroUsd: 15 });
		expect(await settleIn(stub, settle)).toMatchObject({ settled: false, usedTokens: 250, usedMicroUsd: 15 });
	});

	it("charges an unsettled reservation its reserved amount at expiry, and a late settlement nothing", async () => {
		const stub = stubFor("budget-expiry");
		await at(stub, FUTURE);
		const reserved = await reserveIn(stub, {
			budget: { monthlyTokens: 1000, monthlyMicroUsd: 5000 },
			tokens: 400,
			microUsd: 900,
			ttlMs: 60_000,
		});
		if (!reserved.ok) throw new Error("expected a reservation");
		await at(stub, FUTURE + 59_999);
		expect(await stub.budgetState()).toMatchObject({ usedTokens: 0, reservedTokens: 400 });
		await at(stub, FUTURE + 60_000);
		expect(await stub.budgetState()).toMatchObject({
			usedTokens: 400,
			usedMicroUsd: 900,
			reservedTokens: 0,
			reservations: 0,
		});
		const late = await settleIn(stub, { reservationId: reserved.reservationId, tokens: 5, microUsd: 5 });
		expect(late).toMatchObject({ settled: false, usedTokens: 400, usedMicroUsd: 900 });
	});

	it("starts a new calendar month with the whole budget", async () => {
		const stub = stubFor("budget-rollover");
		const endOfMonth = Date.UTC(2040, 2, 31, 23, 59);
		await at(stub, endOfMonth);
		const spent = await reserveIn(stub, { budget: TOKENS_1000, tokens: 1000, microUsd: 0 });
		if (!spent.ok) throw new Error("expected a reservation");
		await settleIn(stub, { reservationId: spent.reservationId, tokens: 1000, microUsd: 0 });
		const refused = await reserveIn(stub, { budget: TOKENS_1000, tokens: 1, microUsd: 0 });
		expect(refused).toMatchObject({ ok: false, limitedBy: "tokens", retryAfterMs: 60_000, resetMs: 60_000 });
		const april = Date.UTC(2040, 3, 1);
		await at(stub, april);
		expect(await reserveIn(stub, { budget: TOKENS_1000, tokens: 1000, microUsd: 0 })).toMatchObject({
			ok: true,
			remainingTokens: 0,
		});
		expect(await stub.budgetState()).toMatchObject({ period: "2040-04", usedTokens: 0 });
	});

	it("a second isolate is refused the room a first one's lease holds, until the first gives it back", async () => {
		const isolate = () => new BudgetClient({ stub: (name) => rateLimiterFor(env, name), leaseMs: 60_000 });
		const first = isolate();
		const second = isolate();
		const one = await first.reserve("budget-isolates", TOKENS_1000, { tokens: 100, microUsd: 0 });
		if (!one.ok) throw new Error("expected room");
		// The first lease holds room for four such requests (its own included): 400 of the 1000.
		expect(await stubFor("budget-isolates").budgetState()).toMatchObject({ reservedTokens: 400 });
		expect(await second.reserve("budget-isolates", TOKENS_1000, { tokens: 700, microUsd: 0 })).toMatchObject({
			ok: false,
			limitedBy: "tokens",
			remainingTokens: 600,
			retryAfterMs: 1000,
		});
		await first.settle(one.reservation, { tokens: 60, microUsd: 0 });
		await first.flush();
		expect(await stubFor("budget-isolates").budgetState()).toMatchObject({ usedTokens: 60, reservedTokens: 0 });
		expect(await second.reserve("budget-isolates", TOKENS_1000, { tokens: 600, microUsd: 0 })).toMatchObject({
			ok: true,
		});
	});

	it("keeps budgets per tenant: one tenant's spending leaves another's untouched", async () => {
		const budgets = budgetsFor(env);
		const spender = await reserveMany("budget-tenant-a", TOKENS_1000, 12, 100);
		expect(spender.reservations).toHaveLength(10);
		const other = await reserveMany("budget-tenant-b", TOKENS_1000, 12, 100);
		expect(other.reservations).toHaveLength(10);
		expect(other.reservations.every((r) => r.name === "tenant:budget-tenant-b")).toBe(true);
		await budgets.settle(other.reservations[0] as BudgetReservation, { tokens: 1, microUsd: 0 });
		await budgets.flush();
		expect(await stubFor("budget-tenant-a").budgetState()).toMatchObject({ usedTokens: 0, reservedTokens: 1000 });
		expect(await stubFor("budget-tenant-b").budgetState()).toMatchObject({ usedTokens: 1, reservedTokens: 900 });
	});

	it("keeps the ledger in SQLite: an evicted object reloads it and settles an earlier reservation", async () => {
		const stub = stubFor("budget-evicted");
		const reserved = await reserveIn(stub, { budget: TOKENS_1000, tokens: 600, microUsd: 70 });
		if (!reserved.ok) throw new Error("expected a reservation");
		const stored = await runInDurableObject(stub, (_instance: RateLimiter, state) =>
			state.storage.sql
				.exec<{ tokens: number; micro_usd: number }>("SELECT tokens, micro_usd FROM budget_reservations")
				.toArray(),
		);
		expect(stored).toEqual([{ tokens: 600, micro_usd: 70 }]);
		const before = await stub.budgetState();
		await evictDurableObject(stub);
		const again = stubFor("budget-evicted");
		expect(await again.budgetState()).toEqual(before);
		expect(await reserveIn(again, { budget: TOKENS_1000, tokens: 401, microUsd: 0 })).toMatchObject({ ok: false });
		expect(await settleIn(again, { reservationId: reserved.reservationId, tokens: 100, microUsd: 10 })).toMatchObject({
			settled: true,
			usedTokens: 100,
			usedMicroUsd: 10,
			reservedTokens: 0,
		});
	});

	it("leaves the tenant's rate limit and quota untouched", async () => {
		const stub = stubFor("budget-and-rate");
		const policy = { rate: { perSecond: 0.001, burst: 10 }, monthlyQuota: 100, lease: { maxTokens: 5, ttlMs: 5000 } };
		await stub.acquire({ policy, want: 3, returns: [] });
		const before = await stub.state();
		await reserveIn(stub, { budget: TOKENS_1000, tokens: 500, microUsd: 0 });
		expect(await stub.state()).toEqual(before);
	});
});
