/**
 * Exact admission across isolates, over real HTTP: two gateway Workers (separate isolates, each with
 * its own lease client) share one RateLimiter namespace. Hundreds of concurrent requests, split
 * between them, admit exactly the tenant's burst (with negligible refill) — or exactly its monthly
 * quota — and every other request is a 429 problem with Retry-After. Counts only, never timings.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Gateway, type Limits, startGateway } from "../helpers/node/gateway.ts";

/** Requests sent to each isolate, all at once. */
const PER_ISOLATE = 150;
/** A bucket size that is no multiple of any lease size. */
const BURST = 37;
const QUOTA = 23;
/** One token per 1000 s: nothing refills during a test. */
const NO_REFILL = 0.001;

let gw: Gateway;

beforeAll(async () => {
	gw = await startGateway({ isolates: 2 });
});

afterAll(async () => {
	await gw?.dispose();
});

interface Outcome {
	isolate: number;
	status: number;
	contentType: string | null;
	retryAfter: string | null;
	code: string | undefined;
}

/** `PER_ISOLATE` concurrent GET /v1/me to each isolate, interleaved, all in flight together. */
async function stampede(tenantId: string, limits: Limits): Promise<Outcome[]> {
	await gw.seedTenant({ id: tenantId, tier: "pro", limits });
	const token = await gw.mintJwt({ tenantId, scopes: ["api:read"] });
	const requests: Promise<Outcome>[] = [];
	for (let i = 0; i < PER_ISOLATE; i++) {
		gw.urls.forEach((base, isolate) => {
			requests.push(
				fetch(new URL("/v1/me", base), { headers: { authorization: `Bearer ${token}` } }).then(async (res) => {
					const text = await res.text();
					let code: string | undefined;
					if (res.status !== 200) code = (JSON.parse(text) as { code?: string }).code;
					return {
						isolate,
						status: res.status,
						contentType: res.headers.get("content-type"),
						retryAfter: res.headers.get("retry-after"),
						code,
					};
				}),
			);
		});
	}
	return Promise.all(requests);
}

function summary(outcomes: Outcome[]): Record<string, number> {
	const counts: Record<string, number> = {};
	for (const o of outcomes) {
		const k = `isolate${o.isolate + 1}:${o.status}`;
		counts[k] = (counts[k] ?? 0) + 1;
	}
	return counts;
}

function expectRefusals(refused: Outcome[], code: string): void {
	for (const o of refused) {
		expect(o.status).toBe(429);
		expect(o.contentType).toMatch(/^application\/problem\+json/);
		expect(o.code).toBe(code);
		expect(o.retryAfter).toMatch(/^[1-9]\d*$/);
	}
}

describe("admission across two isolates", () => {
	it("uses two isolates", () => {
		expect(gw.urls).toHaveLength(2);
		expect(gw.urls[0]?.href).not.toBe(gw.urls[1]?.href);
	});

	it(`admits exactly the burst (${BURST}) of ${2 * PER_ISOLATE} concurrent requests`, async () => {
		const outcomes = await stampede("burst-tenant", {
			rate: { perSecond: NO_REFILL, burst: BURST },
			monthlyQuota: 1_000_000,
		});
		const admitted = outcomes.filter((o) => o.status === 200);
		expect(admitted.length, JSON.stringify(summary(outcomes))).toBe(BURST);
		expectRefusals(
			outcomes.filter((o) => o.status !== 200),
			"rate-limited",
		);

		// The bucket stays empty for every isolate.
		const token = await gw.mintJwt({ tenantId: "burst-tenant", scopes: ["api:read"] });
		for (const base of gw.urls) {
			const res = await fetch(new URL("/v1/me", base), { headers: { authorization: `Bearer ${token}` } });
			await res.arrayBuffer();
			expect(res.status).toBe(429);
		}
	});

	it(`admits exactly the monthly quota (${QUOTA}) of ${2 * PER_ISOLATE} concurrent requests`, async () => {
		const outcomes = await stampede("quota-tenant", {
			rate: { perSecond: NO_REFILL, burst: 100_000 },
			monthlyQuota: QUOTA,
		});
		const admitted = outcomes.filter((o) => o.status === 200);
		expect(admitted.length, JSON.stringify(summary(outcomes))).toBe(QUOTA);
		expectRefusals(
			outcomes.filter((o) => o.status !== 200),
			"quota-exceeded",
		);
	});
});
