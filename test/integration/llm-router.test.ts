/**
 * The LLM router against fake providers and the real CircuitBreaker Durable Object: target planning
 * by tier, weighted order, retries with backoff and Retry-After, fallback chains, answers at once for
 * request errors, deadlines, and breaker transitions (open → refused without a round trip →
 * half-open with a bounded number of probes → closed).
 */
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it, onTestFinished, vi } from "vitest";
import { BreakerClient, breakerName, circuitBreakerFor } from "../../src/breaker";
import { ApiError } from "../../src/http";
import { systemClock } from "../../src/lib";
import { type LlmConfig, LlmConfigSchema } from "../../src/llm/config";
import { type Provider, ProviderError } from "../../src/llm/providers";
import { planTargets, type RouteEnv, route } from "../../src/llm/router";
import type { ChatCompletion } from "../../src/llm/types";
import { setObjectClock } from "../helpers/object-clock";

function config(overrides: Partial<Record<string, unknown>> = {}): LlmConfig {
	return LlmConfigSchema.parse({
		providers: {
			a: { kind: "openai-compatible", baseUrl: "http://a.test/v1", keyless: true },
			b: { kind: "openai-compatible", baseUrl: "http://b.test/v1", keyless: true },
			c: { kind: "openai-compatible", baseUrl: "http://c.test/v1", apiKeySecret: "C_KEY" },
		},
		aliases: {
			fast: {
				targets: [
					{ provider: "a", model: "m1" },
					{ provider: "b", model: "m2", priority: 1 },
				],
			},
			smart: { targets: [{ provider: "c", model: "big" }] },
			balanced: {
				targets: [
					{ provider: "a", model: "m1", weight: 3 },
					{ provider: "b", model: "m2", weight: 1 },
				],
			},
			embed: { kind: "embeddings", targets: [{ provider: "a", model: "e1" }] },
		},
		routing: { backoffBaseMs: 100, backoffMaxMs: 1000, retryAfterCapMs: 2000, ...(overrides.routing as object) },
		...overrides,
	});
}

function completion(model: string): ChatCompletion {
	return {
		id: "chatcmpl-1",
		object: "chat.completion",
		created: 0,
		model,
		choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
		usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
	};
}

type Script = Array<"ok" | "500" | "429" | "429-long" | "400" | "unsupported" | "hang" | "refused">;

/** A provider that follows a script per model and counts calls. */
function fakeProviders(scripts: Record<string, Script>) {
	const calls: string[] = [];
	const make = (name: string): Provider => ({
		name,
		kind: "openai-compatible",
		async chat(call) {
			calls.push(`${name}/${call.model}`);
			const step = scripts[`${name}/${call.model}`]?.shift() ?? "ok";
			switch (step) {
				case "ok":
					return completion(call.model);
				case "500":
					throw new ProviderError("http", "500", { status: 500 });
				case "429":
					throw new ProviderError("http", "429", { status: 429, retryAfterMs: 1000 });
				case "429-long":
					throw new ProviderError("http", "429", { status: 429, retryAfterMs: 60_000 });
				case "400":
					throw new ProviderError("http", "400", { status: 400, upstreamMessage: "bad messages" });
				case "unsupported":
					throw new ProviderError("unsupported", `${name} cannot take it`, {
						status: 400,
						upstreamMessage: `${name} cannot take it`,
					});
				case "refused":
					throw new ProviderError("connection", "refused");
				case "hang":
					return new Promise<ChatCompletion>((_, reject) => {
						call.signal.addEventListener("abort", () => reject(new ProviderError("timeout", "timed out")), {
							once: true,
						});
					});
			}
		},
		async chatStream() {
			throw new Error("not used");
		},
	});
	return { calls, providers: new Map(["a", "b", "c"].map((n) => [n, make(n)])) };
}

function routeEnv(cfg: LlmConfig, providers: Map<string, Provider>, extra: Partial<RouteEnv> = {}) {
	const sleeps: number[] = [];
	const background: Promise<unknown>[] = [];
	const r: RouteEnv = {
		cfg,
		tenantId: "acme",
		providers,
		breakers: {
			admit: async () => ({ allowed: true, state: "closed", probe: false, source: "local" }),
			record: async () => ({ state: "closed" }),
		},
		keyFor: async (_name, p) =>
			p.keyless ? { byok: false } : p.apiKeySecret === "C_KEY" ? { apiKey: "k", byok: false } : null,
		waitUntil: (p) => background.push(p),
		random: () => 0.5,
		sleep: async (ms) => {
			sleeps.push(ms);
		},
		...extra,
	};
	return { r, sleeps, background };
}

const call = (name: string) => (a: Parameters<Parameters<typeof route>[2]>[0]) =>
	a.provider.chat({
		model: a.target.model,
		request: { model: name, messages: [{ role: "user", content: "hi" }] },
		signal: a.signal,
	});

async function rejection(promise: Promise<unknown>): Promise<ApiError> {
	const err = await promise.then(
		() => null,
		(e: unknown) => e,
	);
	expect(err).toBeInstanceOf(ApiError);
	return err as ApiError;
}

describe("planTargets", () => {
	const cfg = config();
	it("lets a tier use its aliases and their targets, never more", async () => {
		expect(planTargets(cfg, ["fast"], "fast", "chat").map((t) => t.provider)).toEqual(["a", "b"]);
		expect(planTargets(cfg, ["fast"], "b/m2", "chat")).toEqual([
			expect.objectContaining({ provider: "b", model: "m2" }),
		]);
		expect((await rejection(Promise.resolve().then(() => planTargets(cfg, ["fast"], "smart", "chat")))).code).toBe(
			"tier-not-allowed",
		);
		expect((await rejection(Promise.resolve().then(() => planTargets(cfg, ["fast"], "c/big", "chat")))).code).toBe(
			"tier-not-allowed",
		);
		expect((await rejection(Promise.resolve().then(() => planTargets(cfg, ["*"], "nope", "chat")))).code).toBe(
			"model-not-found",
		);
		expect((await rejection(Promise.resolve().then(() => planTargets(cfg, ["*"], "embed", "chat")))).code).toBe(
			"model-not-found",
		);
		// `*` allows any model of a configured provider; an unknown provider is still unknown.
		expect(planTargets(cfg, ["*"], "c/other", "chat")).toEqual([
			expect.objectContaining({ provider: "c", model: "other" }),
		]);
		expect((await rejection(Promise.resolve().then(() => planTargets(cfg, ["*"], "zz/other", "chat")))).code).toBe(
			"model-not-found",
		);
	});

	it("narrows to the requested providers, and refuses a narrowing that leaves nothing", async () => {
		expect(planTargets(cfg, ["fast"], "fast", "chat", { providers: ["b"] }).map((t) => t.provider)).toEqual(["b"]);
		expect(
			(await rejection(Promise.resolve().then(() => planTargets(cfg, ["fast"], "fast", "chat", { providers: ["c"] }))))
				.code,
		).toBe("model-not-found");
	});

	it("balances a priority group by weight", () => {
		let seed = 42;
		const random = () => {
			seed = (seed * 1103515245 + 12345) % 2 ** 31;
			return seed / 2 ** 31;
		};
		let firstA = 0;
		const draws = 4000;
		for (let i = 0; i < draws; i++) {
			if (planTargets(cfg, ["balanced"], "balanced", "chat", { random })[0]?.provider === "a") firstA++;
		}
		// Weight 3 of 4: three quarters of first places, within a generous margin for 4000 draws.
		expect(firstA / draws).toBeGreaterThan(0.72);
		expect(firstA / draws).toBeLessThan(0.78);
	});
});

describe("route", () => {
	it("retries a target with full-jitter backoff, then falls back to the next", async () => {
		const cfg = config();
		const { calls, providers } = fakeProviders({ "a/m1": ["500", "500"], "b/m2": ["ok"] });
		const { r, sleeps } = routeEnv(cfg, providers);
		const served = await route(r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast"));
		expect(calls).toEqual(["a/m1", "a/m1", "b/m2"]);
		expect(served.target.provider).toBe("b");
		expect(served.attempts).toBe(3);
		// One retry on `a` (random 0.5 × min(1000, 100 · 2^0)); none after the last retry.
		expect(sleeps).toEqual([50]);
	});

	it("honours Retry-After up to the cap, and moves on when it is longer", async () => {
		const cfg = config();
		const honoured = fakeProviders({ "a/m1": ["429", "ok"] });
		const one = routeEnv(cfg, honoured.providers);
		expect((await route(one.r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast"))).target.provider).toBe("a");
		expect(one.sleeps).toEqual([1000]);

		const tooLong = fakeProviders({ "a/m1": ["429-long"], "b/m2": ["ok"] });
		const two = routeEnv(cfg, tooLong.providers);
		expect((await route(two.r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast"))).target.provider).toBe("b");
		expect(tooLong.calls).toEqual(["a/m1", "b/m2"]);
		expect(two.sleeps).toEqual([]);
	});

	it("answers a request error at once, without retry or fallback", async () => {
		const cfg = config();
		const { calls, providers } = fakeProviders({ "a/m1": ["400"] });
		const err = await rejection(
			route(routeEnv(cfg, providers).r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast")),
		);
		expect(err.code).toBe("bad-request");
		expect(err.message).toBe("bad messages");
		expect(calls).toEqual(["a/m1"]);
	});

	it("moves on from a target that cannot take the request, and answers 400 only when none can", async () => {
		const cfg = config();
		const one = fakeProviders({ "a/m1": ["unsupported"], "b/m2": ["ok"] });
		const served = await route(
			routeEnv(cfg, one.providers).r,
			planTargets(cfg, ["fast"], "fast", "chat"),
			call("fast"),
		);
		expect(served.target.provider).toBe("b");
		expect(one.calls).toEqual(["a/m1", "b/m2"]);

		const none = fakeProviders({ "a/m1": ["unsupported"], "b/m2": ["unsupported"] });
		const { r, sleeps } = routeEnv(cfg, none.providers);
		const err = await rejection(route(r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast")));
		expect(err.status).toBe(400);
		expect(err.message).toBe("b cannot take it");
		// Not retried: the same target would refuse it again.
		expect(none.calls).toEqual(["a/m1", "b/m2"]);
		expect(sleeps).toEqual([]);
	});

	it("says why when every target failed", async () => {
		const cfg = config({ routing: { retriesPerTarget: 0 } });
		const limited = fakeProviders({ "a/m1": ["429"], "b/m2": ["429"] });
		const err = await rejection(
			route(routeEnv(cfg, limited.providers).r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast")),
		);
		expect(err.code).toBe("rate-limited");
		expect(err.headers["retry-after"]).toBe("1");

		const down = fakeProviders({ "a/m1": ["refused"], "b/m2": ["500"] });
		expect(
			(
				await rejection(
					route(routeEnv(cfg, down.providers).r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast")),
				)
			).code,
		).toBe("upstream-error");
	});

	it("does not fall back on causes left out of fallbackOn", async () => {
		const cfg = config({ routing: { retriesPerTarget: 0, fallbackOn: ["429"] } });
		const { calls, providers } = fakeProviders({ "a/m1": ["500"] });
		expect(
			(await rejection(route(routeEnv(cfg, providers).r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast"))))
				.code,
		).toBe("upstream-error");
		expect(calls).toEqual(["a/m1"]);
	});

	it("times an attempt out and falls back; the deadline bounds the whole request", async () => {
		const cfg = config({ routing: { retriesPerTarget: 0, attemptTimeoutMs: 50, deadlineMs: 5000 } });
		const { calls, providers } = fakeProviders({ "a/m1": ["hang"], "b/m2": ["ok"] });
		const served = await route(routeEnv(cfg, providers).r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast"));
		expect(served.target.provider).toBe("b");
		expect(calls).toEqual(["a/m1", "b/m2"]);

		const tight = config({ routing: { retriesPerTarget: 3, attemptTimeoutMs: 5000, deadlineMs: 60 } });
		const hung = fakeProviders({ "a/m1": ["hang"], "b/m2": ["hang"] });
		const err = await rejection(
			route(routeEnv(tight, hung.providers).r, planTargets(tight, ["fast"], "fast", "chat"), call("fast")),
		);
		expect(err.code).toBe("upstream-timeout");
		expect(hung.calls).toEqual(["a/m1"]);
	});

	it("skips a target without a key", async () => {
		const cfg = config();
		const { calls, providers } = fakeProviders({});
		const { r } = routeEnv(cfg, providers, { keyFor: async () => null });
		expect((await rejection(route(r, planTargets(cfg, ["smart"], "smart", "chat"), call("smart")))).code).toBe(
			"upstream-unavailable",
		);
		expect(calls).toEqual([]);
	});
});

describe("route with the real CircuitBreaker", () => {
	it("opens after consecutive failures, refuses without a round trip, probes boundedly, closes", async () => {
		const cfg = config({
			routing: { retriesPerTarget: 0 },
			breaker: { consecutiveFailures: 2, cooldownMs: 300, halfOpenProbes: 1, minimumVolume: 1000 },
		});
		let objectCalls = 0;
		// Simulated time, for the isolate and the objects alike, so the 300 ms cooldown ends when the test
		// says and not when a busy machine gets round to it. An hour ahead of the real clock: the objects
		// never let their clocks run backwards, and go back to the real clock when the test ends.
		let now = Date.now() + 3_600_000;
		const clock = () => now;
		const pinned = new Map<string, Promise<void>>();
		onTestFinished(async () => {
			await Promise.all([...pinned.keys()].map((name) => setObjectClock(circuitBreakerFor(env, name), systemClock)));
		});
		const breakers = new BreakerClient({
			now: clock,
			stub: (name) => {
				objectCalls++;
				const real = circuitBreakerFor(env, name);
				let pin = pinned.get(name);
				if (!pin) {
					pin = setObjectClock(real, clock);
					pinned.set(name, pin);
				}
				const onClock = pin;
				return {
					admit: async (input) => {
						await onClock;
						return real.admit(input);
					},
					record: async (input) => {
						await onClock;
						return real.record(input);
					},
				};
			},
		});
		const tenantId = `t${crypto.randomUUID().slice(0, 8)}`;
		const { calls, providers } = fakeProviders({ "a/m1": ["500", "500"] });
		const { r, background } = routeEnv(cfg, providers, { breakers, tenantId });
		const targets = planTargets(cfg, ["fast"], "fast", "chat");
		const settle = async () => {
			await Promise.all(background.splice(0));
		};

		// Two failures on `a` (each falls back to `b`) trip a's tenant breaker.
		for (let i = 0; i < 2; i++) {
			expect((await route(r, targets, call("fast"))).target.provider).toBe("b");
			await settle();
		}
		const name = breakerName({ tenantId, target: "llm:a/m1" });
		expect((await circuitBreakerFor(env, name).state()).state).toBe("open");

		// Open: `a` is refused from the isolate's memory — no provider call, no object round trip for it.
		calls.length = 0;
		const before = objectCalls;
		expect((await route(r, targets, call("fast"))).target.provider).toBe("b");
		await settle();
		expect(calls).toEqual(["b/m2"]);
		const aRoundTrips = objectCalls - before - 4; // b's two breakers: one admit and one record each
		expect(aRoundTrips).toBe(0);

		// After the cooldown, half-open admits one probe at a time: of two concurrent calls one probes `a`.
		now += 350;
		calls.length = 0;
		let release: (() => void) | undefined;
		const gate = new Promise<void>((resolve) => {
			release = resolve;
		});
		const slow = fakeProviders({});
		const aProvider = slow.providers.get("a");
		if (!aProvider) throw new Error("no provider a");
		providers.set("a", {
			...aProvider,
			async chat(c) {
				calls.push(`a/${c.model}`);
				await gate;
				return completion(c.model);
			},
		});
		const first = route(r, targets, call("fast"));
		// The first call holds the probe once it has reached `a`.
		await vi.waitUntil(() => calls.includes("a/m1"), { timeout: 10_000 });
		const second = await route(r, targets, call("fast"));
		expect(second.target.provider).toBe("b");
		release?.();
		expect((await first).target.provider).toBe("a");
		expect(calls.filter((c) => c === "a/m1")).toHaveLength(1);
		await settle();
		expect((await circuitBreakerFor(env, name).state()).state).toBe("closed");
	});
});

describe("route: retries ask the breakers again", () => {
	// The gateway's breaker for a provider is shared: each test starts with it closed.
	beforeEach(async () => {
		await circuitBreakerFor(env, { gateway: true, target: "llm:a" }).reset();
	});

	it("stops retrying a target whose breaker the last failure opened, and falls back", async () => {
		const cfg = config({
			routing: { retriesPerTarget: 2 },
			breaker: { consecutiveFailures: 1, cooldownMs: 60_000, minimumVolume: 1000 },
		});
		// As the plane makes it: a closed answer is trusted for a second.
		const breakers = new BreakerClient({ stub: (name) => circuitBreakerFor(env, name), closedTrustMs: 1000 });
		const tenantId = `t${crypto.randomUUID().slice(0, 8)}`;
		const { calls, providers } = fakeProviders({ "a/m1": ["500", "500", "500"] });
		const background: Promise<unknown>[] = [];
		const { r } = routeEnv(cfg, providers, {
			breakers,
			tenantId,
			waitUntil: (p) => background.push(p),
			// The backoff lets the failure's record reach the object, as a real wait would.
			sleep: async () => {
				await Promise.all(background);
			},
		});
		const served = await route(r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast"));
		expect(calls).toEqual(["a/m1", "b/m2"]);
		expect(served).toMatchObject({ target: { provider: "b" }, attempts: 2 });
		await Promise.all(background);
		const gateway = breakerName({ gateway: true, target: "llm:a" });
		expect((await circuitBreakerFor(env, gateway).state()).state).toBe("open");
	});

	it("keeps the failure that opened the breaker as the cause: fallbackOn decides on it, not on circuit-open", async () => {
		const cfg = config({
			routing: { retriesPerTarget: 2, fallbackOn: ["5xx"] },
			breaker: { consecutiveFailures: 1, cooldownMs: 60_000, minimumVolume: 1000 },
		});
		const breakers = new BreakerClient({ stub: (name) => circuitBreakerFor(env, name), closedTrustMs: 1000 });
		const { calls, providers } = fakeProviders({ "a/m1": ["500"] });
		const background: Promise<unknown>[] = [];
		const { r } = routeEnv(cfg, providers, {
			breakers,
			tenantId: `t${crypto.randomUUID().slice(0, 8)}`,
			waitUntil: (p) => background.push(p),
			sleep: async () => {
				await Promise.all(background);
			},
		});
		const served = await route(r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast"));
		expect(calls).toEqual(["a/m1", "b/m2"]);
		expect(served.target.provider).toBe("b");
		await Promise.all(background);
	});

	it("makes no call when the client leaves while the breakers are asked", async () => {
		const cfg = config();
		const { calls, providers } = fakeProviders({});
		const controller = new AbortController();
		const { r } = routeEnv(cfg, providers, {
			signal: controller.signal,
			breakers: {
				admit: async () => {
					controller.abort();
					return { allowed: true, state: "closed", probe: false, source: "object" };
				},
				record: async () => ({ state: "closed" }),
			},
		});
		await rejection(route(r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast")));
		expect(calls).toEqual([]);
	});
});

describe("route: timers and probe bookkeeping", () => {
	it("stops the attempt timer once the upstream has answered (a long body is not a dead provider)", async () => {
		// Simulated timers: the body's time passes when the test says, however busy the machine.
		vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
		onTestFinished(() => {
			vi.useRealTimers();
		});
		const cfg = config({ routing: { retriesPerTarget: 0, attemptTimeoutMs: 30 } });
		const { providers } = fakeProviders({});
		const a = providers.get("a");
		if (!a) throw new Error("no provider a");
		providers.set("a", {
			...a,
			async chat(c) {
				c.onResponse?.();
				// The body takes far longer than the attempt timeout.
				await vi.advanceTimersByTimeAsync(120);
				if (c.signal.aborted) throw new ProviderError("timeout", "aborted");
				return completion(c.model);
			},
		});
		const served = await route(routeEnv(cfg, providers).r, planTargets(cfg, ["fast"], "fast", "chat"), (x) =>
			x.provider.chat({
				model: x.target.model,
				request: { model: "fast", messages: [{ role: "user", content: "hi" }] },
				signal: x.signal,
				onResponse: x.responded,
			}),
		);
		expect(served.target.provider).toBe("a");
	});

	it("still bounds reading an answer by the request's deadline", async () => {
		const cfg = config({ routing: { retriesPerTarget: 0, attemptTimeoutMs: 30, deadlineMs: 120 } });
		const { providers } = fakeProviders({});
		const a = providers.get("a");
		if (!a) throw new Error("no provider a");
		const stalled: Provider = {
			...a,
			chat: (c) =>
				new Promise((_, reject) => {
					c.onResponse?.();
					// Headers came; the body never does.
					c.signal.addEventListener("abort", () => reject(new ProviderError("timeout", "body stalled")), {
						once: true,
					});
				}),
		};
		providers.set("a", stalled);
		providers.set("b", stalled);
		const err = await rejection(
			route(routeEnv(cfg, providers).r, planTargets(cfg, ["fast"], "fast", "chat"), (x) =>
				x.provider.chat({
					model: x.target.model,
					request: { model: "fast", messages: [{ role: "user", content: "hi" }] },
					signal: x.signal,
					onResponse: x.responded,
				}),
			),
		);
		expect(err.code).toBe("upstream-timeout");
	});

	it("releases a probe slot on a 429 instead of counting it, and on a refusal by the next breaker", async () => {
		const cfg = config({ routing: { retriesPerTarget: 0 } });
		const recorded: Array<{ name: string; success: boolean; release?: boolean; probe?: boolean }> = [];
		const breakers: RouteEnv["breakers"] = {
			admit: async (name) =>
				name.startsWith("gateway:")
					? { allowed: true, state: "half_open", probe: true, probeId: "g1", source: "object" }
					: { allowed: true, state: "closed", probe: false, source: "object" },
			record: async (name, _policy, outcome) => {
				recorded.push({ name, success: outcome.success, release: outcome.release, probe: outcome.probe });
				return { state: "closed" };
			},
		};
		const { providers } = fakeProviders({ "a/m1": ["429-long"] });
		const { r, background } = routeEnv(cfg, providers, { breakers });
		await route(r, planTargets(cfg, ["fast"], "fast", "chat"), call("fast"));
		await Promise.all(background);
		// The gateway breaker's probe on `a` is released, not counted; the tenant's plain call records nothing.
		expect(recorded.filter((x) => x.name.includes(":llm:a"))).toEqual([
			{ name: "gateway:llm:a", success: false, release: true, probe: true },
		]);

		// The tenant's breaker refuses after the gateway's granted a probe: the slot is released.
		recorded.length = 0;
		const refusing: RouteEnv["breakers"] = {
			admit: async (name) =>
				name.startsWith("gateway:")
					? { allowed: true, state: "half_open", probe: true, probeId: "g2", source: "object" }
					: { allowed: false, state: "open", probe: false, retryAfterMs: 1000, source: "local" },
			record: breakers.record,
		};
		const second = routeEnv(cfg, fakeProviders({}).providers, { breakers: refusing });
		const err = await rejection(route(second.r, planTargets(cfg, ["smart"], "smart", "chat"), call("smart")));
		expect(err.code).toBe("upstream-unavailable");
		await Promise.all(second.background);
		expect(recorded).toEqual([{ name: "gateway:llm:c", success: false, release: true, probe: true }]);
	});
});
