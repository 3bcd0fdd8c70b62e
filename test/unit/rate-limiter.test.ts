/**
 * The RateLimiter Durable Object for real (SQLite storage, RPC), driven by several LeaseClients —
 * each one stands for a separate isolate with its own memory — firing concurrently.
 */
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { RateLimiter } from "../../durable-objects/rate-limiter";
import { type BucketPolicy, type Grant, LeaseClient, type LimiterStub, rateLimiterFor } from "../../src/ratelimit";

const isolates = (n: number, options: Partial<ConstructorParameters<typeof LeaseClient>[0]> = {}) =>
	Array.from({ length: n }, () => new LeaseClient({ stub: (name) => rateLimiterFor(env, name), ...options }));

/** Lets every continuation of promises already settled run: one turn of the event loop, no waiting. */
const settled = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

async function fire(clients: LeaseClient[], name: string, policy: BucketPolicy, perIsolate: number) {
	const decisions = await Promise.all(
		clients.flatMap((client) => Array.from({ length: perIsolate }, () => client.take(name, policy))),
	);
	const count = (kind: string) => decisions.filter((d) => d.kind === kind).length;
	return { allowed: count("allowed"), denied: count("denied"), unavailable: count("unavailable"), decisions };
}

describe("RateLimiter with leases across isolates", () => {
	it("admits exactly the burst when 4 isolates fire 600 concurrent requests at a bucket of 50", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 0.001, burst: 50 },
			monthlyQuota: 1_000_000,
			lease: { maxTokens: 10, ttlMs: 5000 },
		};
		const result = await fire(isolates(4), "tenant:exact-burst", policy, 150);
		expect(result.allowed).toBe(50);
		expect(result.denied).toBe(550);
		const denied = result.decisions.find((d) => d.kind === "denied");
		expect(denied).toMatchObject({ kind: "denied", limitedBy: "rate" });
	});

	it("admits exactly the monthly quota under concurrency and records it in the object", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 1000, burst: 10_000 },
			monthlyQuota: 37,
			lease: { maxTokens: 25, ttlMs: 5000 },
		};
		const result = await fire(isolates(3), "tenant:exact-quota", policy, 100);
		expect(result.allowed).toBe(37);
		const denied = result.decisions.find((d) => d.kind === "denied");
		expect(denied).toMatchObject({ kind: "denied", limitedBy: "quota" });
		const stub = rateLimiterFor(env, "tenant:exact-quota");
		const state = await runInDurableObject(stub, (instance: RateLimiter) => instance.state());
		expect(state.quotaUsed).toBe(37);
	});

	it("serves most requests from the isolate's lease, not a round trip each", async () => {
		let calls = 0;
		const client = new LeaseClient({
			stub: (name): LimiterStub => {
				const real = rateLimiterFor(env, name);
				return {
					acquire: (input) => {
						calls++;
						return real.acquire(input);
					},
				};
			},
		});
		const policy: BucketPolicy = {
			rate: { perSecond: 10_000, burst: 100_000 },
			monthlyQuota: 10_000_000,
			lease: { maxTokens: 100, ttlMs: 5000 },
		};
		for (let i = 0; i < 1000; i++) {
			expect((await client.take("tenant:hot-path", policy)).kind).toBe("allowed");
		}
		expect(calls).toBeLessThan(30); // ramps 1, 2, 4 … 100 tokens a lease
	});

	it("returns an isolate's unspent tokens so another isolate can use them", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 0.001, burst: 20 },
			monthlyQuota: 1000,
			lease: { maxTokens: 5, ttlMs: 5000 },
		};
		const [a, b] = isolates(2) as [LeaseClient, LeaseClient];
		// a takes a lease bigger than it uses, then b drains what is left.
		await Promise.all(Array.from({ length: 3 }, () => a.take("tenant:returns", policy)));
		const bFirst = await fire([b], "tenant:returns", policy, 40);
		const held = 20 - 3 - bFirst.allowed;
		expect(held).toBeGreaterThanOrEqual(0);
		// a's next acquire returns its leftovers; all 20 tokens are eventually spent, never more.
		const aMore = await fire([a], "tenant:returns", policy, 40);
		const bMore = await fire([b], "tenant:returns", policy, 40);
		expect(3 + bFirst.allowed + aMore.allowed + bMore.allowed).toBe(20);
	});

	it("refunds a token into the same live lease", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 0.001, burst: 1 },
			monthlyQuota: 1000,
			lease: { maxTokens: 1, ttlMs: 5000 },
		};
		const [client] = isolates(1) as [LeaseClient];
		const first = await client.take("tenant:refund", policy);
		expect(first.kind).toBe("allowed");
		if (first.kind === "allowed") first.refund();
		expect((await client.take("tenant:refund", policy)).kind).toBe("allowed");
		expect((await client.take("tenant:refund", policy)).kind).toBe("denied");
	});

	it("reports the object unreachable, then backs off before trying again", async () => {
		let calls = 0;
		const client = new LeaseClient({
			stub: () => ({
				acquire: async () => {
					calls++;
					throw new Error("Durable Object reset because its code was updated");
				},
			}),
			unavailableBackoffMs: 60_000,
		});
		const policy: BucketPolicy = {
			rate: { perSecond: 1, burst: 1 },
			monthlyQuota: 1,
			lease: { maxTokens: 1, ttlMs: 1000 },
		};
		const first = await client.take("tenant:down", policy);
		const second = await client.take("tenant:down", policy);
		expect(first).toMatchObject({ kind: "unavailable" });
		expect(second).toMatchObject({ kind: "unavailable" });
		expect(calls).toBe(1);
	});

	it("keeps its state in SQLite across a restart of the object", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 0.001, burst: 5 },
			monthlyQuota: 1000,
			lease: { maxTokens: 5, ttlMs: 5000 },
		};
		const stub = rateLimiterFor(env, "tenant:persisted");
		const grant = await stub.acquire({ policy, want: 3, returns: [] });
		expect(grant.granted).toBeGreaterThan(0);
		const stored = await runInDurableObject(stub, (_instance: RateLimiter, state) =>
			state.storage.sql
				.exec<{ outstanding: number; quota_used: number }>("SELECT outstanding, quota_used FROM bucket")
				.one(),
		);
		expect(stored).toEqual({ outstanding: grant.granted, quota_used: grant.granted });
	});

	it("reloads its state from SQLite after the object is evicted", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 0.001, burst: 9 },
			monthlyQuota: 1000,
			lease: { maxTokens: 5, ttlMs: 10_000 },
		};
		const stub = rateLimiterFor(env, "tenant:evicted");
		const first = await stub.acquire({ policy, want: 4, returns: [] });
		const before = await stub.state();
		await evictDurableObject(stub);
		const after = await rateLimiterFor(env, "tenant:evicted").state();
		expect(after).toEqual(before);
		// The reloaded object still honours the lease it granted before eviction.
		const again = rateLimiterFor(env, "tenant:evicted");
		await again.acquire({ policy, want: 1, returns: [{ leaseId: first.leaseId as string, unspent: first.granted }] });
		expect((await again.state()).quotaUsed).toBe(after.quotaUsed - first.granted + 1);
	});

	it("abandons a refill that never answers, and hands its tokens back if it answers late", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 1, burst: 50 },
			monthlyQuota: 1000,
			lease: { maxTokens: 5, ttlMs: 5000 },
		};
		let release: (g: Grant) => void = () => {};
		const calls: Array<{ returns: unknown[] }> = [];
		let first = true;
		let leases = 0;
		// The refills after the stuck one answer at once: a real round trip could itself outlast the
		// 100 ms refill timeout on a busy machine, and what is tested here is the client's bookkeeping.
		const granting = (want: number): Grant => ({
			leaseId: `lease-${++leases}`,
			granted: want,
			ttlMs: 5000,
			available: 50,
			quotaRemaining: 1000,
			quotaResetMs: 0,
			rateResetMs: 0,
			limitedBy: null,
			retryAfterMs: 0,
		});
		// The client's clock moves only when the test moves it.
		let now = Date.now();
		const client = new LeaseClient({
			now: () => now,
			refillTimeoutMs: 100,
			unavailableBackoffMs: 150,
			stub: (): LimiterStub => ({
				acquire: async (input) => {
					calls.push({ returns: input.returns });
					if (first) {
						first = false;
						// The request that started this refill was cancelled: its call never settles (until we say so).
						return new Promise<Grant>((resolve) => {
							release = resolve;
						});
					}
					return granting(input.want);
				},
			}),
		});
		const stuck = await Promise.all([client.take("tenant:stuck", policy), client.take("tenant:stuck", policy)]);
		expect(stuck.map((d) => d.kind)).toEqual(["unavailable", "unavailable"]);
		// After the back-off, the next request starts a fresh refill instead of waiting forever.
		now += 200;
		expect((await client.take("tenant:stuck", policy)).kind).toBe("allowed");
		release({
			leaseId: "late-lease",
			granted: 3,
			ttlMs: 5000,
			available: 0,
			quotaRemaining: 0,
			quotaResetMs: 0,
			rateResetMs: 0,
			limitedBy: null,
			retryAfterMs: 0,
		});
		await settled();
		// Drain the live lease so the client calls again; the late lease goes back unspent with that call.
		for (let i = 0; i < 10 && calls.length < 3; i++) await client.take("tenant:stuck", policy);
		expect(calls[2]?.returns).toEqual(expect.arrayContaining([{ leaseId: "late-lease", unspent: 3 }]));
	});

	it("counts the object unreachable when its answer arrives after the lease expired", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 1, burst: 50 },
			monthlyQuota: 1000,
			lease: { maxTokens: 5, ttlMs: 100 },
		};
		let calls = 0;
		let now = Date.now();
		const client = new LeaseClient({
			now: () => now,
			safetyMarginMs: 50,
			stub: (name): LimiterStub => ({
				acquire: async (input) => {
					calls++;
					const grant = await rateLimiterFor(env, name).acquire(input);
					now += 120; // slower than the lease lives
					return grant;
				},
			}),
		});
		const decision = await client.take("tenant:slow", policy);
		expect(decision).toMatchObject({
			kind: "unavailable",
			reason: expect.stringContaining("after the lease had expired"),
		});
		expect(calls).toBe(1); // no storm of retries
	});

	it("rebuilds the tables of an object made with the old schema WITHOUT ROWID, keeping its rows", async () => {
		const stub = rateLimiterFor(env, "tenant:old-schema");
		const policy: BucketPolicy = {
			rate: { perSecond: 1, burst: 5 },
			monthlyQuota: 100,
			lease: { maxTokens: 1, ttlMs: 1000 },
		};
		await stub.acquire({ policy, want: 1, returns: [] });
		// The tables as objects made before had them (rowid tables, where a TEXT PRIMARY KEY lets NULL in).
		await runInDurableObject(stub, (_instance: RateLimiter, state) => {
			const sql = state.storage.sql;
			sql.exec("DROP TABLE leases");
			sql.exec(
				"CREATE TABLE leases (id TEXT PRIMARY KEY, tokens INTEGER NOT NULL, expires_at REAL NOT NULL, period TEXT NOT NULL, expired INTEGER NOT NULL DEFAULT 0)",
			);
			sql.exec("INSERT INTO leases VALUES ('old-lease', 1, 1e15, '2027-01', 0), (NULL, 1, 1e15, '2027-01', 0)");
			sql.exec("DROP TABLE budget_reservations");
			sql.exec(
				"CREATE TABLE budget_reservations (id TEXT PRIMARY KEY, tokens INTEGER NOT NULL, micro_usd INTEGER NOT NULL, expires_at REAL NOT NULL, period TEXT NOT NULL)",
			);
			sql.exec(
				"INSERT INTO budget_reservations VALUES ('old-res', 1, 1, 1e15, '2027-01'), (NULL, 1, 1, 1e15, '2027-01')",
			);
		});
		await evictDurableObject(stub);
		// The constructor rebuilds both; the row with a NULL id (never reachable by id) is dropped.
		await rateLimiterFor(env, "tenant:old-schema").state();
		const tables = await runInDurableObject(stub, (_instance: RateLimiter, state) => {
			const sql = state.storage.sql;
			const ddl = (name: string) =>
				sql.exec<{ sql: string }>("SELECT sql FROM sqlite_master WHERE name = ?", name).one().sql;
			return {
				leases: { ddl: ddl("leases"), ids: sql.exec<{ id: string }>("SELECT id FROM leases").toArray() },
				reservations: {
					ddl: ddl("budget_reservations"),
					ids: sql.exec<{ id: string }>("SELECT id FROM budget_reservations").toArray(),
				},
			};
		});
		expect(tables.leases.ddl).toMatch(/WITHOUT ROWID$/);
		expect(tables.leases.ids).toEqual([{ id: "old-lease" }]);
		expect(tables.reservations.ddl).toMatch(/WITHOUT ROWID$/);
		expect(tables.reservations.ids).toEqual([{ id: "old-res" }]);
	});
});
