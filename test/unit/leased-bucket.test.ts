/**
 * The admission algorithm against simulated time: real LeaseClients (one per simulated isolate) over a
 * real LeasedBucket, with random arrivals, network delays and isolates that die holding leases.
 * Asserts the two promises of src/ratelimit/leased-bucket.ts for every window of every run.
 */
import { describe, expect, it } from "vitest";
import { type BucketPolicy, LEASE_EXPIRY_GRACE_MS, LeaseClient, LeasedBucket } from "../../src/ratelimit";
import { mulberry32 } from "../helpers/random";

interface Run {
	admitted: number[];
	requests: number;
}

async function simulate(
	seed: number,
	policy: BucketPolicy,
	options: { isolates: number; requests: number; maxGapMs: number; start?: number },
): Promise<Run> {
	const random = mulberry32(seed);
	const clock = { t: options.start ?? Date.UTC(2026, 10, 10) };
	const bucket = new LeasedBucket({
		newId: (() => {
			let n = 0;
			return () => `lease-${++n}`;
		})(),
	});
	const stub = {
		acquire: async (req: Parameters<LeasedBucket["acquire"]>[0]) => {
			clock.t += Math.floor(random() * 5); // the request's trip to the object
			const grant = bucket.acquire(req, clock.t);
			clock.t += Math.floor(random() * 5); // and back
			return grant;
		},
	};
	const newClient = () =>
		new LeaseClient({ stub: () => stub, now: () => clock.t, safetyMarginMs: 0, maxDenyCacheMs: 0 });
	const clients = Array.from({ length: options.isolates }, newClient);
	const admitted: number[] = [];
	for (let i = 0; i < options.requests; i++) {
		// Mostly short gaps, sometimes a lull as long as a lease lives, so leases expire part-spent.
		clock.t += Math.floor(random() * (random() < 0.15 ? 2 * policy.lease.ttlMs : options.maxGapMs));
		const which = Math.floor(random() * clients.length);
		if (random() < 0.01) clients[which] = newClient(); // an isolate is evicted, abandoning its lease
		const client = clients[which] as LeaseClient;
		const decision = await client.take("tenant:sim", policy);
		if (decision.kind === "allowed") admitted.push(clock.t);
	}
	return { admitted, requests: options.requests };
}

/** The largest number of admissions in any window, minus what a token bucket allows in that window. */
function worstExcess(admitted: number[], policy: BucketPolicy): number {
	let worst = Number.NEGATIVE_INFINITY;
	for (let i = 0; i < admitted.length; i++) {
		for (let j = i; j < admitted.length; j++) {
			const span = ((admitted[j] as number) - (admitted[i] as number)) / 1000;
			const excess = j - i + 1 - (policy.rate.burst + policy.rate.perSecond * span);
			if (excess > worst) worst = excess;
		}
	}
	return worst;
}

const POLICIES: Array<{ name: string; policy: BucketPolicy; maxGapMs: number }> = [
	{
		name: "tight bucket, fast refill",
		policy: { rate: { perSecond: 20, burst: 10 }, monthlyQuota: 1_000_000, lease: { maxTokens: 5, ttlMs: 200 } },
		maxGapMs: 30,
	},
	{
		name: "large leases, slow refill",
		policy: { rate: { perSecond: 2, burst: 60 }, monthlyQuota: 1_000_000, lease: { maxTokens: 25, ttlMs: 1000 } },
		maxGapMs: 20,
	},
	{
		name: "quota smaller than the bucket",
		policy: { rate: { perSecond: 100, burst: 200 }, monthlyQuota: 137, lease: { maxTokens: 25, ttlMs: 500 } },
		maxGapMs: 10,
	},
];

describe("LeasedBucket with leasing isolates", () => {
	for (const { name, policy, maxGapMs } of POLICIES) {
		it(`never admits more than the bucket allows in any window (${name})`, async () => {
			for (let seed = 1; seed <= 12; seed++) {
				const run = await simulate(seed, policy, { isolates: 1 + (seed % 4), requests: 1500, maxGapMs });
				expect(worstExcess(run.admitted, policy), `seed ${seed}`).toBeLessThanOrEqual(1e-9);
				expect(run.admitted.length, `seed ${seed}`).toBeLessThanOrEqual(policy.monthlyQuota);
				// Not vacuous: the limit was reached, and a good share of demand was still served.
				expect(run.admitted.length, `seed ${seed}`).toBeLessThan(run.requests);
				expect(run.admitted.length, `seed ${seed}`).toBeGreaterThan(
					Math.min(policy.monthlyQuota, policy.rate.burst) / 2,
				);
			}
		});
	}

	it("admits exactly the quota when demand exceeds it and no isolate is lost", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 1000, burst: 1000 },
			monthlyQuota: 73,
			lease: { maxTokens: 10, ttlMs: 1000 },
		};
		const bucket = new LeasedBucket();
		let t = Date.UTC(2026, 10, 10);
		const stub = { acquire: async (req: Parameters<LeasedBucket["acquire"]>[0]) => bucket.acquire(req, t) };
		const clients = Array.from({ length: 3 }, () => new LeaseClient({ stub: () => stub, now: () => t }));
		let allowed = 0;
		for (let i = 0; i < 300; i++) {
			t += 1;
			const d = await (clients[i % 3] as LeaseClient).take("q", policy);
			if (d.kind === "allowed") allowed++;
		}
		expect(allowed).toBe(73);
		expect(bucket.state().quotaUsed).toBe(73);
	});

	it("credits a late-reported lease to the quota but not to the bucket", () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 0.001, burst: 10 },
			monthlyQuota: 100,
			lease: { maxTokens: 10, ttlMs: 100 },
		};
		const bucket = new LeasedBucket();
		const t0 = Date.UTC(2026, 10, 10);
		const first = bucket.acquire({ policy, want: 2, returns: [] }, t0);
		expect(first.granted).toBe(2);
		// The lease expires unreported (retired after its expiry plus the grace): its tokens are treated as spent.
		const later = bucket.acquire(
			{ policy, want: 1, returns: [{ leaseId: first.leaseId as string, unspent: 2 }] },
			t0 + 100 + LEASE_EXPIRY_GRACE_MS,
		);
		expect(later.granted).toBe(1);
		expect(bucket.state().quotaUsed).toBe(1); // 2 charged, 2 credited back, 1 charged
		expect(bucket.state().available + bucket.state().outstanding).toBeCloseTo(8, 0); // the 2 expired tokens stay gone
	});

	it("takes unspent tokens of a live lease back into the bucket", () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 0.001, burst: 40 },
			monthlyQuota: 100,
			lease: { maxTokens: 10, ttlMs: 10_000 },
		};
		const bucket = new LeasedBucket();
		const t0 = Date.UTC(2026, 10, 10);
		const a = bucket.acquire({ policy, want: 10, returns: [] }, t0);
		expect(a.granted).toBe(10);
		expect(bucket.state()).toMatchObject({ outstanding: 10, quotaUsed: 10 });
		bucket.acquire({ policy, want: 0 + 1, returns: [{ leaseId: a.leaseId as string, unspent: 7 }] }, t0 + 1);
		// 3 spent from the first lease; the second lease holds what it was granted.
		const s = bucket.state();
		expect(s.quotaUsed).toBe(3 + s.outstanding);
		expect(Math.floor(s.available) + s.outstanding).toBe(37);
	});

	it("refuses with the time until a token frees up", () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 2, burst: 1 },
			monthlyQuota: 100,
			lease: { maxTokens: 1, ttlMs: 1000 },
		};
		const bucket = new LeasedBucket();
		const t0 = Date.UTC(2026, 10, 10);
		const a = bucket.acquire({ policy, want: 1, returns: [] }, t0);
		const b = bucket.acquire({ policy, want: 1, returns: [{ leaseId: a.leaseId as string, unspent: 0 }] }, t0);
		expect(b).toMatchObject({ granted: 0, limitedBy: "rate", retryAfterMs: 500 });
		const c = bucket.acquire({ policy, want: 1, returns: [] }, t0 + 500);
		expect(c.granted).toBe(1);
	});

	it("resets the quota at the start of the month and tells when", () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 1000, burst: 1000 },
			monthlyQuota: 1,
			lease: { maxTokens: 1, ttlMs: 1000 },
		};
		const bucket = new LeasedBucket();
		const lastMinute = Date.UTC(2026, 10, 30, 23, 59);
		const a = bucket.acquire({ policy, want: 1, returns: [] }, lastMinute);
		expect(a.granted).toBe(1);
		const b = bucket.acquire({ policy, want: 1, returns: [] }, lastMinute + 1);
		expect(b).toMatchObject({ granted: 0, limitedBy: "quota", retryAfterMs: 60_000 - 1 });
		const c = bucket.acquire({ policy, want: 1, returns: [] }, Date.UTC(2026, 11, 1));
		expect(c.granted).toBe(1);
	});

	it("never lets a clock that steps backwards reset the quota or refill the bucket", () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 1, burst: 5 },
			monthlyQuota: 3,
			lease: { maxTokens: 1, ttlMs: 1000 },
		};
		const bucket = new LeasedBucket();
		const newMonth = Date.UTC(2026, 11, 1, 0, 0, 1);
		let returns: Array<{ leaseId: string; unspent: number }> = [];
		for (let i = 0; i < 3; i++) {
			const g = bucket.acquire({ policy, want: 1, returns }, newMonth + i);
			expect(g.granted).toBe(1);
			returns = [{ leaseId: g.leaseId as string, unspent: 0 }];
		}
		expect(bucket.state()).toMatchObject({ quotaUsed: 3, period: "2026-12" });
		// The object moves to a host whose clock is behind, across the month boundary and back.
		const behind = bucket.acquire({ policy, want: 1, returns }, newMonth - 5000);
		expect(behind).toMatchObject({ granted: 0, limitedBy: "quota" });
		expect(bucket.state()).toMatchObject({ quotaUsed: 3, period: "2026-12" });
		expect(bucket.acquire({ policy, want: 1, returns: [] }, newMonth + 10).granted).toBe(0);
	});

	it("keeps each month within its quota when leases straddle the month's end", async () => {
		const policy: BucketPolicy = {
			rate: { perSecond: 500, burst: 1000 },
			monthlyQuota: 40,
			lease: { maxTokens: 10, ttlMs: 1000 },
		};
		const start = Date.UTC(2026, 10, 30, 23, 59, 50); // ten seconds before December
		for (let seed = 1; seed <= 6; seed++) {
			const run = await simulate(seed, policy, { isolates: 3, requests: 800, maxGapMs: 40, start });
			const december = Date.UTC(2026, 11, 1);
			const november = run.admitted.filter((t) => t < december).length;
			expect(november, `seed ${seed}`).toBeLessThanOrEqual(40);
			expect(run.admitted.length - november, `seed ${seed}`).toBeLessThanOrEqual(40);
			expect(run.admitted.length - november, `seed ${seed}`).toBeGreaterThan(0);
		}
	});
});
