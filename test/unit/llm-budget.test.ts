/**
 * The LLM budget ledger against simulated time (reserve, settle, expiry, month rollover, persistence),
 * and the isolate's budget client against stub objects that answer, refuse, fail or hang.
 */
import { describe, expect, it, vi } from "vitest";
import {
	BudgetLedger,
	type BudgetRow,
	type BudgetStore,
	type ReservationRow,
} from "../../durable-objects/rate-limiter";
import type { LlmBudget } from "../../src/config";
import {
	BudgetClient,
	type BudgetSettlement,
	type BudgetStub,
	ReserveBudgetRequestSchema,
	type ReserveBudgetResult,
	SettleBudgetRequestSchema,
} from "../../src/ratelimit";
import { mulberry32 } from "../helpers/random";

const T0 = Date.UTC(2030, 4, 10, 12);
const TTL = 60_000;
const TOKENS_1000: LlmBudget = { monthlyTokens: 1000, monthlyMicroUsd: null };

function ids(): () => string {
	let n = 0;
	return () => `r-${++n}`;
}

/** A store that keeps rows as the object's SQLite would. */
function memoryStore() {
	const rows: { budget: BudgetRow | undefined; reservations: Map<string, ReservationRow> } = {
		budget: undefined,
		reservations: new Map(),
	};
	const store: BudgetStore = {
		saveBudget: (b) => {
			rows.budget = { ...b };
		},
		saveReservation: (r) => {
			rows.reservations.set(r.id, { ...r });
		},
		deleteReservation: (id) => {
			rows.reservations.delete(id);
		},
	};
	return { rows, store };
}

function reserve(ledger: BudgetLedger, budget: LlmBudget, tokens: number, at = T0, microUsd = 0) {
	return ledger.reserve({ budget, tokens, microUsd, ttlMs: TTL }, at);
}

function granted(result: ReserveBudgetResult): string {
	if (!result.ok) throw new Error(`expected a reservation, got a refusal by ${result.limitedBy}`);
	return result.reservationId;
}

describe("BudgetLedger", () => {
	it("admits exactly the reservations that fit: 33 of 60 requests of 30 tokens in a budget of 1000", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		const results = Array.from({ length: 60 }, () => reserve(ledger, TOKENS_1000, 30));
		expect(results.filter((r) => r.ok)).toHaveLength(33);
		expect(results[33]).toMatchObject({ ok: false, limitedBy: "tokens", remainingTokens: 10, remainingMicroUsd: null });
		expect(ledger.state(T0)).toMatchObject({ usedTokens: 0, reservedTokens: 990, reservations: 33 });
	});

	it("hints a short retry while reservations hold the room, and the month's end once usage has spent it", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		const monthEnd = Date.UTC(2030, 5, 1) - T0;
		const id = granted(reserve(ledger, TOKENS_1000, 900));
		expect(reserve(ledger, TOKENS_1000, 200)).toMatchObject({ ok: false, retryAfterMs: 1000, resetMs: monthEnd });
		ledger.settle({ reservationId: id, tokens: 900, microUsd: 0 }, T0);
		expect(reserve(ledger, TOKENS_1000, 200)).toMatchObject({ ok: false, retryAfterMs: monthEnd, resetMs: monthEnd });
	});

	it("frees budget for more requests when a request settles for less than it reserved", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		const id = granted(reserve(ledger, TOKENS_1000, 600));
		expect(reserve(ledger, TOKENS_1000, 500).ok).toBe(false);
		const settled = ledger.settle({ reservationId: id, tokens: 100, microUsd: 0 }, T0);
		expect(settled).toMatchObject({ settled: true, usedTokens: 100, reservedTokens: 0 });
		expect(reserve(ledger, TOKENS_1000, 500)).toMatchObject({ ok: true, remainingTokens: 400 });
	});

	it("overshoots only by what settlements used beyond their reservations, then refuses everything", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		const reservations = Array.from({ length: 10 }, () => granted(reserve(ledger, TOKENS_1000, 100)));
		expect(reserve(ledger, TOKENS_1000, 1).ok).toBe(false);
		for (const id of reservations) ledger.settle({ reservationId: id, tokens: 150, microUsd: 0 }, T0);
		expect(ledger.state(T0)).toMatchObject({ usedTokens: 1500, reservedTokens: 0 });
		expect(reserve(ledger, TOKENS_1000, 0)).toMatchObject({ ok: false, limitedBy: "tokens", remainingTokens: 0 });
	});

	it("never lets usage plus reservations exceed the budget plus the settlements' excess, over random traffic", () => {
		const budgets: LlmBudget[] = [
			{ monthlyTokens: 5000, monthlyMicroUsd: null },
			{ monthlyTokens: null, monthlyMicroUsd: 40_000 },
			{ monthlyTokens: 5000, monthlyMicroUsd: 40_000 },
		];
		for (const [i, budget] of budgets.entries()) {
			for (const seed of [1, 2, 3]) {
				const random = mulberry32(10 * i + seed);
				const ledger = new BudgetLedger({ newId: ids() });
				const open = new Map<string, { tokens: number; microUsd: number; period: string }>();
				let period = "";
				let excess = { tokens: 0, microUsd: 0 };
				let refusals = 0;
				let t = T0;
				for (let step = 0; step < 3000; step++) {
					// Mostly a busy stream of requests; now and then days pass (reservations expire, months roll over).
					t += random() < 0.01 ? 10 * 86_400_000 : Math.floor(random() * 200);
					if (open.size > 0 && random() < 0.45) {
						const [id, held] = [...open.entries()][Math.floor(random() * open.size)] as [
							string,
							{ tokens: number; microUsd: number; period: string },
						];
						open.delete(id);
						// Settle for anything between nothing and half as much again as was reserved.
						const tokens = Math.floor(held.tokens * random() * 1.5);
						const microUsd = Math.floor(held.microUsd * random() * 1.5);
						const result = ledger.settle({ reservationId: id, tokens, microUsd }, t);
						if (result.settled && held.period === result.period) {
							excess.tokens += Math.max(0, tokens - held.tokens);
							excess.microUsd += Math.max(0, microUsd - held.microUsd);
						}
					} else {
						const tokens = 1 + Math.floor(random() * 400);
						const microUsd = Math.floor(random() * 3000);
						const result = reserve(ledger, budget, tokens, t, microUsd);
						if (result.ok) open.set(result.reservationId, { tokens, microUsd, period: ledger.state(t).period });
						else refusals++;
					}
					const s = ledger.state(t);
					if (s.period !== period) {
						period = s.period;
						excess = { tokens: 0, microUsd: 0 };
					}
					if (budget.monthlyTokens !== null) {
						expect(s.usedTokens + s.reservedTokens).toBeLessThanOrEqual(budget.monthlyTokens + excess.tokens);
					}
					if (budget.monthlyMicroUsd !== null) {
						expect(s.usedMicroUsd + s.reservedMicroUsd).toBeLessThanOrEqual(budget.monthlyMicroUsd + excess.microUsd);
					}
				}
				// The runs spend their budgets: the bounds were tested where they bind.
				expect(refusals).toBeGreaterThan(300);
			}
		}
	});

	it("charges a reservation once when it is settled twice", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		const id = granted(reserve(ledger, TOKENS_1000, 300));
		expect(ledger.settle({ reservationId: id, tokens: 200, microUsd: 0 }, T0)).toMatchObject({
			settled: true,
			usedTokens: 200,
		});
		expect(ledger.settle({ reservationId: id, tokens: 200, microUsd: 0 }, T0)).toMatchObject({
			settled: false,
			usedTokens: 200,
		});
	});

	it("charges an unsettled reservation its reserved amount when it expires, and ignores a late settlement", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		const id = granted(reserve(ledger, TOKENS_1000, 300, T0, 70));
		expect(ledger.state(T0 + TTL - 1)).toMatchObject({ usedTokens: 0, reservedTokens: 300, reservations: 1 });
		expect(ledger.state(T0 + TTL)).toMatchObject({
			usedTokens: 300,
			usedMicroUsd: 70,
			reservedTokens: 0,
			reservedMicroUsd: 0,
			reservations: 0,
		});
		expect(ledger.settle({ reservationId: id, tokens: 10, microUsd: 1 }, T0 + TTL + 1)).toMatchObject({
			settled: false,
			usedTokens: 300,
			usedMicroUsd: 70,
		});
	});

	it("refuses by cost when the dollar budget is what would be exceeded, leaving an unlimited dimension null", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		const budget: LlmBudget = { monthlyTokens: null, monthlyMicroUsd: 500 };
		expect(reserve(ledger, budget, 1_000_000, T0, 400)).toMatchObject({
			ok: true,
			remainingTokens: null,
			remainingMicroUsd: 100,
		});
		expect(reserve(ledger, budget, 1, T0, 101)).toMatchObject({
			ok: false,
			limitedBy: "cost",
			remainingTokens: null,
			remainingMicroUsd: 100,
		});
	});

	it("starts each calendar month (UTC) afresh, and charges a late settlement to the month it was reserved in", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		const lastMinute = Date.UTC(2030, 0, 31, 23, 59, 30);
		const spent = granted(reserve(ledger, TOKENS_1000, 700, lastMinute));
		ledger.settle({ reservationId: spent, tokens: 700, microUsd: 0 }, lastMinute);
		const straddling = granted(reserve(ledger, TOKENS_1000, 300, lastMinute));
		expect(reserve(ledger, TOKENS_1000, 1, lastMinute).ok).toBe(false);

		const february = Date.UTC(2030, 1, 1);
		expect(ledger.state(february)).toMatchObject({ period: "2030-02", usedTokens: 0, reservedTokens: 0 });
		expect(ledger.settle({ reservationId: straddling, tokens: 300, microUsd: 0 }, february)).toMatchObject({
			settled: true,
			usedTokens: 0,
		});
		expect(reserve(ledger, TOKENS_1000, 1000, february).ok).toBe(true);
	});

	it("never lets its clock run backwards, so the month does not roll back", () => {
		const ledger = new BudgetLedger({ newId: ids() });
		ledger.state(Date.UTC(2030, 1, 1));
		granted(reserve(ledger, TOKENS_1000, 1000, Date.UTC(2030, 0, 15)));
		expect(ledger.state(Date.UTC(2030, 0, 15))).toMatchObject({ period: "2030-02", reservedTokens: 1000 });
	});

	it("rebuilds the same state from its stored rows, and settles a reservation made before", () => {
		const { rows, store } = memoryStore();
		const first = new BudgetLedger({ store, newId: ids() });
		const settled = granted(reserve(first, TOKENS_1000, 200));
		first.settle({ reservationId: settled, tokens: 150, microUsd: 0 }, T0);
		const open = granted(reserve(first, TOKENS_1000, 400, T0 + 5));
		const before = first.state(T0 + 10);

		const second = new BudgetLedger({ budget: rows.budget, reservations: [...rows.reservations.values()], store });
		expect(second.state(T0 + 10)).toEqual(before);
		expect(reserve(second, TOKENS_1000, 451, T0 + 10).ok).toBe(false);
		expect(second.settle({ reservationId: open, tokens: 50, microUsd: 0 }, T0 + 20)).toMatchObject({
			settled: true,
			usedTokens: 200,
			reservedTokens: 0,
		});
		expect(rows.reservations.size).toBe(0);
		expect(rows.budget).toMatchObject({ usedTokens: 200, period: "2030-05", clock: T0 + 20 });
	});
});

/** A stub whose methods not overridden fail the test if called. */
function stubOf(overrides: Partial<BudgetStub>): BudgetStub {
	const unexpected = () => Promise.reject(new Error("not expected"));
	return { reserveBudget: unexpected, settleBudget: unexpected, ...overrides };
}

const SETTLEMENT: BudgetSettlement = {
	settled: true,
	period: "2030-05",
	usedTokens: 0,
	usedMicroUsd: 0,
	reservedTokens: 0,
	reservedMicroUsd: 0,
};

describe("BudgetClient", () => {
	it("makes no call at all for an unlimited budget, to reserve or to settle", async () => {
		const reserveBudget = vi.fn();
		const settleBudget = vi.fn();
		const client = new BudgetClient({ stub: () => ({ reserveBudget, settleBudget }) });
		const decision = await client.reserve(
			"t1",
			{ monthlyTokens: null, monthlyMicroUsd: null },
			{ tokens: 10, microUsd: 5 },
		);
		expect(decision).toMatchObject({ ok: true, reservation: { id: null, name: "tenant:t1" }, remainingTokens: null });
		if (decision.ok) await client.settle(decision.reservation, { tokens: 12, microUsd: 6 });
		expect(reserveBudget).not.toHaveBeenCalled();
		expect(settleBudget).not.toHaveBeenCalled();
	});

	it("asks the tenant's rate-limiter object, with estimates rounded up to whole units", async () => {
		const names: string[] = [];
		const reserveBudget = vi.fn(
			async (): Promise<ReserveBudgetResult> => ({
				ok: true,
				reservationId: "r-9",
				remainingTokens: 80,
				remainingMicroUsd: null,
				resetMs: 5,
			}),
		);
		const client = new BudgetClient({
			stub: (name) => {
				names.push(name);
				return stubOf({ reserveBudget });
			},
		});
		const decision = await client.reserve("t2", TOKENS_1000, { tokens: 19.2, microUsd: 0.5 });
		expect(names).toEqual(["tenant:t2"]);
		expect(reserveBudget).toHaveBeenCalledWith({ budget: TOKENS_1000, tokens: 20, microUsd: 1 });
		expect(decision).toEqual({
			ok: true,
			reservation: { id: "r-9", name: "tenant:t2", tokens: 20, microUsd: 1 },
			remainingTokens: 80,
			remainingMicroUsd: null,
			resetMs: 5,
		});
	});

	it("passes a refusal on with the limit that refused and when to retry", async () => {
		const refusal: ReserveBudgetResult = {
			ok: false,
			limitedBy: "cost",
			remainingTokens: null,
			remainingMicroUsd: 3,
			resetMs: 100,
			retryAfterMs: 100,
		};
		const client = new BudgetClient({ stub: () => stubOf({ reserveBudget: async () => refusal }) });
		expect(
			await client.reserve("t3", { monthlyTokens: null, monthlyMicroUsd: 10 }, { tokens: 1, microUsd: 9 }),
		).toEqual(refusal);
	});

	it("fails closed as unavailable when the object throws", async () => {
		const client = new BudgetClient({
			stub: () => stubOf({ reserveBudget: () => Promise.reject(new Error("Durable Object reset")) }),
		});
		expect(await client.reserve("t4", TOKENS_1000, { tokens: 1, microUsd: 0 })).toEqual({
			ok: false,
			limitedBy: "unavailable",
			reason: "Durable Object reset",
		});
	});

	it("fails closed as unavailable when the object does not answer in time, and releases a late grant", async () => {
		let answer: (r: ReserveBudgetResult) => void = () => {};
		const settleBudget = vi.fn(async () => SETTLEMENT);
		const client = new BudgetClient({
			timeoutMs: 20,
			stub: () => ({
				reserveBudget: () =>
					new Promise<ReserveBudgetResult>((resolve) => {
						answer = resolve;
					}),
				settleBudget,
			}),
		});
		const decision = await client.reserve("t5", TOKENS_1000, { tokens: 5, microUsd: 0 });
		expect(decision).toMatchObject({ ok: false, limitedBy: "unavailable", reason: expect.stringContaining("20 ms") });
		answer({ ok: true, reservationId: "late", remainingTokens: 0, remainingMicroUsd: null, resetMs: 0 });
		await vi.waitFor(
			() => expect(settleBudget).toHaveBeenCalledWith({ reservationId: "late", tokens: 0, microUsd: 0 }),
			{
				timeout: 1000,
			},
		);
	});

	it("settles the actual usage, and never throws when the object fails or hangs", async () => {
		const settleBudget = vi.fn(async () => SETTLEMENT);
		const reservation = { id: "r-1", name: "tenant:t6", tokens: 10, microUsd: 3 };
		await new BudgetClient({ stub: () => stubOf({ settleBudget }) }).settle(reservation, {
			tokens: 7.5,
			microUsd: 2,
		});
		expect(settleBudget).toHaveBeenCalledWith({ reservationId: "r-1", tokens: 8, microUsd: 2 });

		const failing = new BudgetClient({ stub: () => stubOf({ settleBudget: () => Promise.reject(new Error("gone")) }) });
		await expect(failing.settle(reservation, { tokens: 1, microUsd: 1 })).resolves.toBeUndefined();
		const hanging = new BudgetClient({
			timeoutMs: 20,
			stub: () => stubOf({ settleBudget: () => new Promise<BudgetSettlement>(() => {}) }),
		});
		await expect(hanging.settle(reservation, { tokens: 1, microUsd: 1 })).resolves.toBeUndefined();
	});
});

describe("the budget RPC contract", () => {
	it("defaults a reservation's life to 15 minutes and an omitted limit to unlimited, and refuses a life over an hour", () => {
		expect(ReserveBudgetRequestSchema.parse({ budget: {}, tokens: 1, microUsd: 0 })).toMatchObject({
			budget: { monthlyTokens: null, monthlyMicroUsd: null },
			ttlMs: 15 * 60 * 1000,
		});
		expect(ReserveBudgetRequestSchema.safeParse({ budget: {}, tokens: 1, microUsd: 0, ttlMs: 3_600_001 }).success).toBe(
			false,
		);
	});

	it("refuses negative or fractional amounts", () => {
		expect(ReserveBudgetRequestSchema.safeParse({ budget: {}, tokens: -1, microUsd: 0 }).success).toBe(false);
		expect(SettleBudgetRequestSchema.safeParse({ reservationId: "r", tokens: 1.5, microUsd: 0 }).success).toBe(false);
	});
});
