/**
 * The CircuitBreaker Durable Object for real (SQLite storage, RPC, the EVENTS queue), driven by several
 * BreakerClients — each one stands for a separate isolate with its own memory — and its state machine
 * driven by simulated time.
 */
import { evictDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, type MockInstance, vi } from "vitest";
import {
	BreakerClient,
	type BreakerClientOptions,
	BreakerMachine,
	type BreakerPolicyInput,
	BreakerPolicySchema,
	type BreakerSnapshot,
	type BreakerStub,
	breakerName,
	circuitBreakerFor,
	DEFAULT_BREAKER_POLICY,
	parseBreakerName,
	type Transition,
} from "../../src/breaker";
import { type EventEnvelope, EventEnvelopeSchema } from "../../src/events";
import { setObjectClock } from "../helpers/object-clock";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const isolates = (n: number, options: Partial<BreakerClientOptions> = {}) =>
	Array.from({ length: n }, () => new BreakerClient({ stub: (name) => circuitBreakerFor(env, name), ...options }));

/** A client whose every round trip to the object is counted. */
/** What a stub object answers to a record: `state`, after `seq` transitions (open for a minute). */
function snapshotOf(state: "closed" | "open", seq: number): BreakerSnapshot {
	return {
		name: "n",
		state,
		since: 0,
		consecutiveFailures: 0,
		window: { successes: 0, failures: 0 },
		probesInFlight: 0,
		probeSuccesses: 0,
		reopenings: 0,
		seq,
		pendingEvents: 0,
		...(state === "open" ? { openUntil: Date.now() + 60_000, retryAfterMs: 60_000 } : {}),
	};
}

function countingClient(options: Partial<BreakerClientOptions> = {}) {
	const calls = { admit: 0, record: 0 };
	const client = new BreakerClient({
		stub: (name): BreakerStub => {
			const real = circuitBreakerFor(env, name);
			return {
				admit: (input) => {
					calls.admit++;
					return real.admit(input);
				},
				record: (input) => {
					calls.record++;
					return real.record(input);
				},
			};
		},
		...options,
	});
	return { client, calls };
}

async function fail(client: BreakerClient, name: string, policy: BreakerPolicyInput, times: number) {
	for (let i = 0; i < times; i++) await client.record(name, policy, { success: false });
}

/**
 * Simulated time for a test's isolates (pass `now` to their clients) and the breakers they reach: it
 * moves only when the test moves it, so a cooldown ends when the test says and not when a busy machine
 * gets round to it.
 */
function simulatedTime() {
	let t = Date.now();
	const now = () => t;
	return {
		now,
		/** Puts the breaker's object on this time (again after an eviction, which brings back the real clock). */
		pin: (breaker: string) => setObjectClock(circuitBreakerFor(env, breaker), now),
		/** Moves time to the end of the breaker's cooldown: the next admit reaches half-open. */
		async afterCooldown(breaker: string) {
			const { openUntil } = await circuitBreakerFor(env, breaker).state();
			t = Math.max(t, openUntil ?? t);
		},
	};
}

const name = (target: string) => breakerName({ tenantId: "acme", target });

describe("breaker names", () => {
	it("names tenant and gateway breakers in one place and parses them back", () => {
		expect(breakerName({ tenantId: "acme", target: "https://hooks.example.com:8443/x" })).toBe(
			"tenant:acme:https://hooks.example.com:8443/x",
		);
		expect(breakerName({ gateway: true, target: "openai" })).toBe("gateway:openai");
		expect(parseBreakerName("tenant:acme:openai:gpt-4o")).toEqual({
			scope: "tenant",
			tenantId: "acme",
			target: "openai:gpt-4o",
		});
		expect(parseBreakerName("gateway:anthropic")).toEqual({ scope: "gateway", target: "anthropic" });
		expect(parseBreakerName("tenant::x")).toBeNull();
		expect(parseBreakerName("something-else")).toBeNull();
	});

	it("refuses targets and tenant ids that would make names ambiguous", () => {
		expect(() => breakerName({ tenantId: "a:b", target: "t" })).toThrow(/tenant/);
		expect(() => breakerName({ tenantId: "acme", target: "" })).toThrow(/target/);
		expect(() => breakerName({ tenantId: "acme", target: "has space" })).toThrow(/target/);
	});

	it("exports defaults that are a valid policy", () => {
		expect(BreakerPolicySchema.parse({})).toEqual(DEFAULT_BREAKER_POLICY);
		expect(() => BreakerPolicySchema.parse({ failureRate: 0 })).toThrow();
	});
});

describe("CircuitBreaker across isolates", () => {
	let send: MockInstance<Queue["send"]>;
	let sendBatch: MockInstance<Queue["sendBatch"]>;
	beforeEach(() => {
		send = vi.spyOn(env.EVENTS, "send");
		sendBatch = vi.spyOn(env.EVENTS, "sendBatch");
	});
	afterEach(() => {
		vi.restoreAllMocks();
	});

	/** Every event handed to the EVENTS queue since the test began, for one breaker. */
	function published(breaker: string): EventEnvelope[] {
		const bodies = [
			...send.mock.calls.map(([body]) => body),
			...sendBatch.mock.calls.flatMap(([messages]) => [...messages].map((m) => m.body)),
		];
		return bodies
			.map((body) => EventEnvelopeSchema.parse(body))
			.filter((e) => e.source === `breaker/${breaker}`)
			.sort((a, b) => Number(a.data.seq) - Number(b.data.seq));
	}

	it("opens after N consecutive failures, and a success resets the run", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 3, minimumVolume: 1000, cooldownMs: 60_000 };
		const breaker = name("consecutive");
		const [a, b] = isolates(2) as [BreakerClient, BreakerClient];
		await fail(a, breaker, policy, 2);
		await b.record(breaker, policy, { success: true });
		await fail(b, breaker, policy, 2);
		expect((await circuitBreakerFor(env, breaker).state()).state).toBe("closed");
		expect(await a.record(breaker, policy, { success: false })).toMatchObject({ state: "open" });
		// b learns it from the object, which refuses with the time it reopens.
		const decision = await b.admit(breaker, policy);
		expect(decision).toMatchObject({ allowed: false, state: "open", source: "object" });
		expect(decision.retryAfterMs).toBeGreaterThan(0);
	});

	it("opens on the failure rate once the window holds the minimum volume, not before", async () => {
		const policy: BreakerPolicyInput = {
			consecutiveFailures: 1000,
			failureRate: 0.5,
			minimumVolume: 10,
			windowMs: 60_000,
			cooldownMs: 60_000,
		};
		const breaker = name("rate");
		const [a, b] = isolates(2) as [BreakerClient, BreakerClient];
		// 9 calls, 8 of them failures: far above the rate, but below the minimum volume.
		for (let i = 0; i < 9; i++) await (i % 2 ? a : b).record(breaker, policy, { success: i === 4 });
		const below = await circuitBreakerFor(env, breaker).state();
		expect(below).toMatchObject({ state: "closed", window: { successes: 1, failures: 8 } });
		// The tenth call reaches the minimum volume with a rate of 0.8.
		expect(await a.record(breaker, policy, { success: true })).toMatchObject({ state: "open" });
		await vi.waitFor(() => expect(published(breaker)).toHaveLength(1), { timeout: 15_000 });
		expect(published(breaker)[0]?.data).toMatchObject({ reason: "failure-rate", failures: 8, volume: 10 });
	});

	it("does not open while the failure rate stays below the threshold", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 1000, failureRate: 0.5, minimumVolume: 4 };
		const breaker = name("healthy");
		const [a] = isolates(1) as [BreakerClient];
		for (let i = 0; i < 30; i++) await a.record(breaker, policy, { success: i % 3 !== 2 });
		expect(await circuitBreakerFor(env, breaker).state()).toMatchObject({
			state: "closed",
			window: { successes: 20, failures: 10 },
		});
	});

	it("admits exactly halfOpenProbes probes when 4 isolates fire 60 concurrent admits after the cooldown", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 1, cooldownMs: 30, halfOpenProbes: 3 };
		const breaker = name("probes");
		const time = simulatedTime();
		await time.pin(breaker);
		const clients = isolates(4, { now: time.now });
		await fail(clients[0] as BreakerClient, breaker, policy, 1);
		await time.afterCooldown(breaker);
		const decisions = await Promise.all(
			clients.flatMap((client) => Array.from({ length: 15 }, () => client.admit(breaker, policy))),
		);
		const probes = decisions.filter((d) => d.allowed);
		expect(probes).toHaveLength(3);
		expect(probes.every((d) => d.probe && d.state === "half_open")).toBe(true);
		expect(new Set(probes.map((d) => d.probeId)).size).toBe(3);
		expect(decisions.filter((d) => !d.allowed).every((d) => d.state === "half_open")).toBe(true);
		const state = await circuitBreakerFor(env, breaker).state();
		expect(state).toMatchObject({ state: "half_open", probesInFlight: 3 });
		// One transition to half-open however many isolates asked at once.
		await vi.waitFor(() => expect(published(breaker).map((e) => e.data.to)).toEqual(["open", "half_open"]), {
			timeout: 15_000,
		});
	});

	it("closes after successesToClose successful probes", async () => {
		const policy: BreakerPolicyInput = {
			consecutiveFailures: 1,
			cooldownMs: 20,
			halfOpenProbes: 2,
			successesToClose: 2,
		};
		const breaker = name("closes");
		const time = simulatedTime();
		await time.pin(breaker);
		const [a, b] = isolates(2, { now: time.now }) as [BreakerClient, BreakerClient];
		await fail(a, breaker, policy, 1);
		await time.afterCooldown(breaker);
		const [pa, pb] = await Promise.all([a.admit(breaker, policy), b.admit(breaker, policy)]);
		expect([pa?.probe, pb?.probe]).toEqual([true, true]);
		expect(await a.record(breaker, policy, { success: true, probe: pa?.probe, probeId: pa?.probeId })).toMatchObject({
			state: "half_open",
		});
		expect(await b.record(breaker, policy, { success: true, probe: pb?.probe, probeId: pb?.probeId })).toMatchObject({
			state: "closed",
		});
		expect(await a.admit(breaker, policy)).toMatchObject({ allowed: true, state: "closed", probe: false });
		await vi.waitFor(
			() =>
				expect(published(breaker).map((e) => e.data.reason)).toEqual([
					"consecutive-failures",
					"cooldown-elapsed",
					"probes-succeeded",
				]),
			{ timeout: 15_000 },
		);
	});

	it("reopens on a failed probe with a longer cooldown, and ignores stale outcomes while open", async () => {
		const policy: BreakerPolicyInput = {
			consecutiveFailures: 1,
			cooldownMs: 20,
			cooldownMultiplier: 3,
			halfOpenProbes: 1,
		};
		const breaker = name("reopens");
		const time = simulatedTime();
		await time.pin(breaker);
		const [a] = isolates(1, { now: time.now }) as [BreakerClient];
		await fail(a, breaker, policy, 1);
		await time.afterCooldown(breaker);
		const probe = await a.admit(breaker, policy);
		expect(probe).toMatchObject({ allowed: true, probe: true });
		// A call admitted before the trip reports late: it is not a probe and does not count.
		await a.record(breaker, policy, { success: true });
		expect(await a.record(breaker, policy, { success: false, probe: true, probeId: probe.probeId })).toMatchObject({
			state: "open",
		});
		const state = await circuitBreakerFor(env, breaker).state();
		expect(state).toMatchObject({ state: "open", reopenings: 1, probesInFlight: 0 });
		await vi.waitFor(() => expect(published(breaker)).toHaveLength(3), { timeout: 15_000 });
		expect(published(breaker)[2]?.data).toMatchObject({ from: "half_open", to: "open", reason: "probe-failed" });
		expect(published(breaker)[2]?.data.cooldownMs).toBe(60);
	});

	it("refuses an open breaker from the isolate's memory with no round trip to the object", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 2, cooldownMs: 60_000 };
		const breaker = name("local-refusal");
		const { client, calls } = countingClient({ maxOpenCacheMs: 60_000 });
		await fail(client, breaker, policy, 2);
		expect(await client.admit(breaker, policy)).toMatchObject({ allowed: false, source: "local" });
		const before = { ...calls };
		const decisions = await Promise.all(Array.from({ length: 100 }, () => client.admit(breaker, policy)));
		expect(decisions.every((d) => !d.allowed && d.state === "open" && d.source === "local")).toBe(true);
		expect(calls).toEqual(before);
		expect(calls.admit).toBe(0); // it learned "open" from its own record
	});

	it("asks the object once the local open deadline passes, and the object decides who probes", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 1, cooldownMs: 20, halfOpenProbes: 1 };
		const breaker = name("ask-after-cooldown");
		// Time stops once the cooldown is over, so "a short while" (the deny cache) cannot run out between
		// the refusal and the next admit however slowly a busy machine gets there.
		const time = simulatedTime();
		await time.pin(breaker);
		const { client, calls } = countingClient({ now: time.now });
		await fail(client, breaker, policy, 1);
		await time.afterCooldown(breaker);
		const [first, second] = await Promise.all([client.admit(breaker, policy), client.admit(breaker, policy)]);
		expect(calls.admit).toBe(2);
		expect([first?.allowed, second?.allowed].sort()).toEqual([false, true]);
		// The refusal (probe slot taken) is repeated from memory for a short while.
		expect(await client.admit(breaker, policy)).toMatchObject({ allowed: false, state: "half_open", source: "local" });
		expect(calls.admit).toBe(2);
	});

	it("remembers a bounded number of breakers, forgetting the least recently used", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 1, cooldownMs: 60_000 };
		const { client, calls } = countingClient({ maxBreakers: 2, maxOpenCacheMs: 60_000 });
		await fail(client, name("lru-a"), policy, 1);
		expect(await client.admit(name("lru-a"), policy)).toMatchObject({ source: "local" });
		await client.admit(name("lru-b"), policy);
		await client.admit(name("lru-c"), policy);
		const before = calls.admit;
		expect(await client.admit(name("lru-a"), policy)).toMatchObject({ allowed: false, source: "object" });
		expect(calls.admit).toBe(before + 1);
	});

	it("keeps its state, counts and probe slots in SQLite across eviction", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 3, minimumVolume: 1000, cooldownMs: 20 };
		const breaker = name("evicted");
		const time = simulatedTime();
		await time.pin(breaker);
		const stub = circuitBreakerFor(env, breaker);
		await stub.record({ policy, success: false });
		await stub.record({ policy, success: false });
		const counted = await stub.state();
		await evictDurableObject(stub);
		await time.pin(breaker);
		expect(await circuitBreakerFor(env, breaker).state()).toEqual(counted);
		// One more failure after the restart completes the run of three.
		expect(await circuitBreakerFor(env, breaker).record({ policy, success: false })).toMatchObject({
			state: "open",
			consecutiveFailures: 0,
		});
		await time.afterCooldown(breaker);
		const probe = await circuitBreakerFor(env, breaker).admit({ policy });
		expect(probe).toMatchObject({ allowed: true, probe: true });
		await evictDurableObject(circuitBreakerFor(env, breaker));
		await time.pin(breaker);
		// The probe slot survived: the next caller is refused, and the probe's outcome still counts.
		const again = circuitBreakerFor(env, breaker);
		expect(await again.admit({ policy })).toMatchObject({ allowed: false, state: "half_open" });
		expect(await again.record({ policy, success: true, probe: true, probeId: probe.probeId })).toMatchObject({
			state: "closed",
			seq: 3,
		});
	});

	it("resets to closed and clears its counts (admin), publishing the transition", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 1, cooldownMs: 60_000 };
		const breaker = name("reset");
		const stub = circuitBreakerFor(env, breaker);
		await stub.record({ policy, success: false });
		expect((await stub.state()).state).toBe("open");
		expect(await stub.reset()).toMatchObject({ state: "closed", consecutiveFailures: 0, reopenings: 0 });
		const [client] = isolates(1) as [BreakerClient];
		expect(await client.admit(breaker, policy)).toMatchObject({ allowed: true, state: "closed" });
		await vi.waitFor(() => expect(published(breaker).map((e) => e.data.reason)).toContain("reset"), {
			timeout: 15_000,
		});
	});

	it("publishes each transition as a valid breaker.transition event for the tenant", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 2, cooldownMs: 60_000 };
		const breaker = breakerName({ tenantId: "globex", target: "https://hooks.globex.test/in" });
		const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
		const [client] = isolates(1) as [BreakerClient];
		await fail(client, breaker, policy, 1);
		await client.record(breaker, policy, { success: false, traceparent });
		await vi.waitFor(() => expect(published(breaker)).toHaveLength(1), { timeout: 15_000 });
		const [event] = published(breaker);
		expect(event).toMatchObject({
			type: "breaker.transition",
			version: 1,
			tenantId: "globex",
			source: `breaker/${breaker}`,
			traceparent,
			data: {
				name: breaker,
				target: "https://hooks.globex.test/in",
				from: "closed",
				to: "open",
				reason: "consecutive-failures",
				failures: 2,
				consecutiveFailures: 2,
				seq: 1,
				cooldownMs: 60_000,
			},
		});
		expect((await circuitBreakerFor(env, breaker).state()).pendingEvents).toBe(0);
	});

	it("publishes a gateway breaker's transitions under the operator tenant", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 1 };
		const breaker = breakerName({ gateway: true, target: "openai" });
		await circuitBreakerFor(env, breaker).record({ policy, success: false });
		await vi.waitFor(() => expect(published(breaker)).toHaveLength(1), { timeout: 15_000 });
		expect(published(breaker)[0]).toMatchObject({ tenantId: env.OPERATOR_TENANT, data: { target: "openai" } });
	});

	it("keeps the new state when the queue refuses the event, and sends it later from the outbox", async () => {
		const policy: BreakerPolicyInput = { consecutiveFailures: 1, cooldownMs: 60_000 };
		const breaker = name("queue-down");
		send.mockRejectedValue(new Error("queue unavailable"));
		sendBatch.mockRejectedValue(new Error("queue unavailable"));
		const stub = circuitBreakerFor(env, breaker);
		expect(await stub.record({ policy, success: false })).toMatchObject({ state: "open" });
		await vi.waitFor(() => expect(send.mock.calls.length + sendBatch.mock.calls.length).toBeGreaterThan(0), {
			timeout: 15_000,
		});
		expect(await stub.state()).toMatchObject({ state: "open", pendingEvents: 1 });
		send.mockRestore();
		sendBatch.mockRestore();
		send = vi.spyOn(env.EVENTS, "send");
		sendBatch = vi.spyOn(env.EVENTS, "sendBatch");
		expect(await runDurableObjectAlarm(stub)).toBe(true);
		expect(published(breaker)).toHaveLength(1);
		expect(await stub.state()).toMatchObject({ state: "open", pendingEvents: 0 });
	});

	it("fails open and backs off when the object throws", async () => {
		let calls = 0;
		const client = new BreakerClient({
			unavailableBackoffMs: 60_000,
			stub: () => ({
				admit: async () => {
					calls++;
					throw new Error("Durable Object reset because its code was updated");
				},
				record: async () => {
					calls++;
					throw new Error("unreachable");
				},
			}),
		});
		const policy: BreakerPolicyInput = {};
		const first = await client.admit(name("down"), policy);
		expect(first).toMatchObject({ allowed: true, state: "unknown", source: "unavailable" });
		expect(first.unavailable).toContain("reset");
		expect(await client.admit(name("down"), policy)).toMatchObject({ allowed: true, source: "unavailable" });
		expect(await client.record(name("down"), policy, { success: false })).toMatchObject({ state: "unknown" });
		expect(calls).toBe(1);
	});

	it("fails open when the object does not answer within the timeout", async () => {
		const client = new BreakerClient({
			timeoutMs: 30,
			stub: () => ({ admit: () => new Promise(() => {}), record: () => new Promise(() => {}) }),
		});
		const decision = await client.admit(name("hung"), {});
		expect(decision).toMatchObject({ allowed: true, source: "unavailable" });
		expect(decision.unavailable).toContain("did not answer");
	});

	it("throws on an invalid policy rather than failing open", async () => {
		const [client] = isolates(1) as [BreakerClient];
		await expect(client.admit(name("bad-policy"), { halfOpenProbes: 0 })).rejects.toThrow();
	});
});

describe("BreakerMachine in simulated time", () => {
	const machine = () => {
		const transitions: Transition[] = [];
		let n = 0;
		const m = new BreakerMachine({ newId: () => `p${++n}`, onTransition: (t) => transitions.push(t) });
		return { m, transitions };
	};

	it("grows the cooldown on each failed probe up to the cap, and starts over after a close", () => {
		const policy = BreakerPolicySchema.parse({
			consecutiveFailures: 1,
			cooldownMs: 100,
			cooldownMultiplier: 2,
			maxCooldownMs: 300,
		});
		const { m, transitions } = machine();
		let t = 1000;
		m.record({ policy, success: false, probe: false }, t);
		const cooldowns: Array<number | undefined> = [transitions.at(-1)?.cooldownMs];
		for (let i = 0; i < 3; i++) {
			t = (m.snapshot().openUntil ?? 0) + 1;
			const probe = m.admit({ policy }, t);
			m.record({ policy, success: false, probe: true, probeId: probe.probeId }, t);
			cooldowns.push(transitions.at(-1)?.cooldownMs);
		}
		expect(cooldowns).toEqual([100, 200, 300, 300]);
		t = (m.snapshot().openUntil ?? 0) + 1;
		const probe = m.admit({ policy }, t);
		m.record({ policy, success: true, probe: true, probeId: probe.probeId }, t);
		m.record({ policy, success: false, probe: false }, t + 1);
		expect(transitions.at(-1)).toMatchObject({ to: "open", cooldownMs: 100 });
	});

	it("lets old outcomes roll out of the window", () => {
		const policy = BreakerPolicySchema.parse({
			consecutiveFailures: 1000,
			failureRate: 0.5,
			minimumVolume: 4,
			windowMs: 1000,
		});
		const { m } = machine();
		for (let i = 0; i < 3; i++) m.record({ policy, success: false, probe: false }, 10_000 + i);
		// Two seconds later the failures are outside the window: four successes make a healthy window.
		for (let i = 0; i < 4; i++) m.record({ policy, success: true, probe: false }, 12_000 + i);
		expect(m.snapshot()).toMatchObject({ state: "closed", window: { successes: 4, failures: 0 } });
	});

	it("frees a probe slot whose outcome never arrives, and ignores that probe's late report", () => {
		const policy = BreakerPolicySchema.parse({ consecutiveFailures: 1, cooldownMs: 10, probeTimeoutMs: 50 });
		const { m } = machine();
		m.record({ policy, success: false, probe: false }, 0);
		const lost = m.admit({ policy }, 20);
		expect(lost).toMatchObject({ allowed: true, probeId: "p1" });
		expect(m.admit({ policy }, 30)).toMatchObject({ allowed: false, state: "half_open", retryAfterMs: 40 });
		const next = m.admit({ policy }, 70);
		expect(next).toMatchObject({ allowed: true, probeId: "p2" });
		m.record({ policy, success: false, probe: true, probeId: "p1" }, 75);
		expect(m.snapshot()).toMatchObject({ state: "half_open", probesInFlight: 1 });
	});

	it("never lets its clock run backwards", () => {
		const policy = BreakerPolicySchema.parse({ consecutiveFailures: 1, cooldownMs: 100 });
		const { m } = machine();
		m.record({ policy, success: false, probe: false }, 5000);
		expect(m.admit({ policy }, 1000)).toMatchObject({ allowed: false, state: "open", retryAfterMs: 100 });
	});
});

describe("releasing probes and coalesced successes", () => {
	const machine = () => {
		let n = 0;
		const transitions: Transition[] = [];
		return { m: new BreakerMachine({ newId: () => `p${++n}`, onTransition: (t) => transitions.push(t) }), transitions };
	};

	it("a release frees the probe slot without counting, so the breaker stays half-open", () => {
		const policy = BreakerPolicySchema.parse({ consecutiveFailures: 1, cooldownMs: 10, halfOpenProbes: 1 });
		const { m, transitions } = machine();
		m.record({ policy, success: false, probe: false }, 0);
		const probe = m.admit({ policy }, 20);
		expect(probe).toMatchObject({ allowed: true, state: "half_open" });
		expect(m.admit({ policy }, 21)).toMatchObject({ allowed: false });
		m.record({ policy, success: true, probe: true, probeId: probe.probeId, release: true }, 22);
		expect(m.snapshot()).toMatchObject({ state: "half_open", probesInFlight: 0, probeSuccesses: 0 });
		expect(transitions.map((t) => t.to)).toEqual(["open", "half_open"]);
		// The slot is free again: the next call probes.
		expect(m.admit({ policy }, 23)).toMatchObject({ allowed: true, state: "half_open" });
		// A plain call's release counts nothing in the closed state either.
		const closed = machine();
		closed.m.record({ policy, success: false, probe: false, release: true }, 0);
		expect(closed.m.snapshot()).toMatchObject({ state: "closed", consecutiveFailures: 0, window: { failures: 0 } });
	});

	it("counts a coalesced record as that many successes", () => {
		const policy = BreakerPolicySchema.parse({ consecutiveFailures: 3, failureRate: 0.5, minimumVolume: 10 });
		const { m } = machine();
		m.record({ policy, success: false, probe: false }, 0);
		m.record({ policy, success: true, probe: false, count: 9 }, 1);
		expect(m.snapshot()).toMatchObject({
			state: "closed",
			consecutiveFailures: 0,
			window: { successes: 9, failures: 1 },
		});
	});

	it("the client sends a trusted-closed breaker's successes together, and a failure after them", async () => {
		const { client, calls } = countingClient({ closedTrustMs: 200 });
		const policy = { consecutiveFailures: 2, minimumVolume: 1000 };
		const breaker = name(`coalesce-${crypto.randomUUID()}`);
		expect((await client.admit(breaker, policy)).allowed).toBe(true);
		const records = Array.from({ length: 20 }, () => client.record(breaker, policy, { success: true }));
		await Promise.all(records);
		// One round trip for all twenty, after the trust period.
		expect(calls.record).toBe(1);
		expect((await circuitBreakerFor(env, breaker).state()).window.successes).toBe(20);

		// A failure flushes the successes counted before it first, so the object sees them in order.
		void client.record(breaker, policy, { success: true });
		await client.record(breaker, policy, { success: false });
		const state = await circuitBreakerFor(env, breaker).state();
		expect(state).toMatchObject({ consecutiveFailures: 1, window: { successes: 21, failures: 1 } });
		expect(calls.record).toBe(3);
	});

	it("the client trusts closed no more after a failure, until the object answers again", async () => {
		const { client, calls } = countingClient({ closedTrustMs: 60_000 });
		const policy = { consecutiveFailures: 5, minimumVolume: 1000 };
		const breaker = name(`distrust-${crypto.randomUUID()}`);
		await client.admit(breaker, policy);
		await client.admit(breaker, policy);
		expect(calls.admit).toBe(1);
		// Not awaited: the next admit must not wait for the failure's answer to stop trusting closed.
		const failed = client.record(breaker, policy, { success: false });
		await client.admit(breaker, policy);
		expect(calls.admit).toBe(2);
		await failed;
		// The answers (closed, one failure) restore the trust.
		await client.admit(breaker, policy);
		expect(calls.admit).toBe(2);
	});

	it("the client's admit waits for a failure's record on its way, and learns the opening from it", async () => {
		let release = () => {};
		const recorded = new Promise<void>((resolve) => {
			release = resolve;
		});
		let admits = 0;
		const client = new BreakerClient({
			stub: (): BreakerStub => ({
				admit: async () => {
					admits++;
					return { allowed: true, state: "closed", probe: false };
				},
				record: async () => {
					await recorded;
					return snapshotOf("open", 1);
				},
			}),
			closedTrustMs: 60_000,
		});
		await client.admit("b", {});
		const failing = client.record("b", {}, { success: false });
		const next = client.admit("b", {});
		release();
		expect(await next).toMatchObject({ allowed: false, state: "open", source: "local" });
		await failing;
		expect(admits).toBe(1);
	});

	it("the client renews a trusted closed answer before it lapses: steady traffic sends only coalesced records", async () => {
		// Simulated time (the client's clock and its flush timer alike): on real timers a stall of a few
		// hundred milliseconds on a busy machine let the trust lapse between two calls.
		vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
		try {
			let admits = 0;
			const counts: (number | undefined)[] = [];
			const client = new BreakerClient({
				now: () => Date.now(),
				stub: (): BreakerStub => ({
					admit: async () => {
						admits++;
						return { allowed: true, state: "closed", probe: false };
					},
					record: async (input) => {
						counts.push(input.count);
						return snapshotOf("closed", counts.length);
					},
				}),
				closedTrustMs: 1000,
			});
			const policy = {};
			const pending: Promise<unknown>[] = [];
			// A call starts every 100 ms for three trust periods and succeeds 200 ms later. Were the successes
			// sent a whole trust period after the first, the trust would lapse first (at 1000 ms) and the calls
			// finishing then would each make a record round trip of their own.
			for (let i = 0; i < 30; i++) {
				expect((await client.admit("steady", policy)).allowed).toBe(true);
				pending.push(sleep(200).then(() => client.record("steady", policy, { success: true })));
				await vi.advanceTimersByTimeAsync(100);
			}
			await vi.advanceTimersByTimeAsync(1000);
			await Promise.all(pending);
			expect(admits).toBe(1);
			expect(counts.every((count) => count !== undefined)).toBe(true);
			expect(counts.reduce((sum: number, count) => sum + (count ?? 0), 0)).toBe(30);
		} finally {
			vi.useRealTimers();
		}
	});
});

describe("answers that arrive out of order", () => {
	it("an older record answer never overwrites a newer one the isolate has learned", async () => {
		let releaseOld: (() => void) | undefined;
		const oldAnswer = new Promise<void>((resolve) => {
			releaseOld = resolve;
		});
		let records = 0;
		const client = new BreakerClient({
			stub: (): BreakerStub => ({
				admit: async () => ({ allowed: true, state: "closed", probe: false }),
				record: async () => {
					// The first record (sent first) answers last, with the older state.
					if (++records === 1) {
						await oldAnswer;
						return snapshotOf("closed", 1);
					}
					return snapshotOf("open", 2);
				},
			}),
		});
		const policy = {};
		const first = client.record("b", policy, { success: true });
		await client.record("b", policy, { success: false });
		releaseOld?.();
		await first;
		expect(await client.admit("b", policy)).toMatchObject({ allowed: false, state: "open", source: "local" });
	});
});
