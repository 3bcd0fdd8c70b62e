/**
 * LLM usage on the real local D1 and queue: token estimates, the recorder's once-only insert, the
 * per-isolate usage buffer (size and timer flushes, one retry), and `GET /v1/usage` through a small
 * app that sets the principal by hand (by day and model, tenant separation, bad queries).
 */
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { beforeAll, describe, expect, it } from "vitest";
import type { Principal } from "../../src/auth";
import { database, llmUsage } from "../../src/db";
import { type EventEnvelope, newEvent, publish } from "../../src/events";
import { problemResponse, toApiError } from "../../src/http";
import type { ChatRequest } from "../../src/llm/types";
import {
	estimateEmbeddingsTokens,
	estimatePromptTokens,
	estimateTokens,
	LLM_USAGE_EVENT,
	MESSAGE_OVERHEAD_TOKENS,
	REPLY_PRIMING_TOKENS,
	recordUsage,
	UsageBuffer,
	type UsagePublisher,
	type UsageRecord,
	usageRecorder,
} from "../../src/llm/usage";
import { type UsageEnv, type UsageReport, usageRange, usageRoutes } from "../../src/llm/usage-routes";
import { uniqueId } from "../helpers/identity";

function record(overrides: Partial<UsageRecord> = {}): UsageRecord {
	return {
		actor: "key:k1",
		keyId: "k1",
		requestId: "req-1",
		operation: "chat",
		requested: "fast",
		provider: "openai",
		model: "gpt-4o-mini",
		promptTokens: 10,
		completionTokens: 5,
		estimated: false,
		costMicroUsd: 100,
		latencyMs: 42,
		status: 200,
		cacheHit: false,
		byok: false,
		attempts: 1,
		...overrides,
	};
}

function usageAt(tenantId: string, time: string, overrides: Partial<UsageRecord> = {}): EventEnvelope {
	return { ...newEvent({ type: LLM_USAGE_EVENT, tenantId, source: "llm", data: record(overrides) }), time };
}

describe("token estimates", () => {
	it("counts about four bytes per token, rounding up", () => {
		expect(estimateTokens("")).toBe(0);
		expect(estimateTokens("abcd")).toBe(1);
		expect(estimateTokens("abcde")).toBe(2);
		// Three bytes per CJK character, four per emoji.
		expect(estimateTokens("日本語")).toBe(3);
		expect(estimateTokens("😀😀")).toBe(2);
	});

	it("adds per-message overhead, tool calls and tool definitions to a chat prompt", () => {
		const plain: ChatRequest = {
			model: "fast",
			messages: [
				{ role: "system", content: "abcd" },
				{ role: "user", content: [{ type: "text", text: "abcdefgh" }] },
			],
		};
		expect(estimatePromptTokens(plain)).toBe(REPLY_PRIMING_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + 1 + 2);
		const withTools: ChatRequest = {
			...plain,
			messages: [
				...plain.messages,
				{
					role: "assistant",
					content: null,
					tool_calls: [{ id: "c", type: "function", function: { name: "wxyz", arguments: "{}" } }],
				},
			],
			tools: [{ type: "function", function: { name: "wxyz" } }],
		};
		const tools = estimateTokens(JSON.stringify(withTools.tools));
		expect(estimatePromptTokens(withTools)).toBe(estimatePromptTokens(plain) + MESSAGE_OVERHEAD_TOKENS + 1 + 1 + tools);
	});

	it("counts embeddings inputs, token ids exactly", () => {
		expect(estimateEmbeddingsTokens({ model: "embed", input: ["abcd", "abcdefgh"] })).toBe(3);
		expect(estimateEmbeddingsTokens({ model: "embed", input: [1, 2, 3] })).toBe(3);
		expect(estimateEmbeddingsTokens({ model: "embed", input: [[1, 2], [3]] })).toBe(3);
	});
});

describe("usageRecorder", () => {
	it("handles llm.usage events only", () => {
		expect(usageRecorder.handles(usageAt("t", "2026-01-01T00:00:00.000Z"))).toBe(true);
		expect(usageRecorder.handles(newEvent({ type: "audit.record", tenantId: "t", source: "x", data: {} }))).toBe(false);
	});

	it("inserts one row per event, even when the event is delivered twice", async () => {
		const tenantId = uniqueId("usage");
		const event = usageAt(tenantId, "2026-03-04T23:59:59.999Z", { cacheHit: true, estimated: true, byok: true });
		await usageRecorder.handle(event, env);
		await usageRecorder.handle(event, env);
		const rows = await database(env.DB).select().from(llmUsage).where(eq(llmUsage.tenantId, tenantId)).all();
		expect(rows).toEqual([
			{
				id: event.id,
				tenantId,
				actor: "key:k1",
				keyId: "k1",
				requestId: "req-1",
				operation: "chat",
				requested: "fast",
				provider: "openai",
				model: "gpt-4o-mini",
				promptTokens: 10,
				completionTokens: 5,
				estimated: 1,
				costMicroUsd: 100,
				latencyMs: 42,
				status: 200,
				cacheHit: 1,
				byok: 1,
				attempts: 1,
				day: "2026-03-04",
				createdAt: Date.parse("2026-03-04T23:59:59.999Z"),
			},
		]);
	});

	it("refuses data that is not a usage record (so the event dead-letters)", async () => {
		const event = { ...usageAt(uniqueId("usage"), "2026-03-04T00:00:00.000Z"), data: { actor: "key:k1" } };
		await expect(usageRecorder.handle(event, env)).rejects.toThrow();
	});
});

/** A publisher that records each call's events, failing its first `failures` calls. */
function recordingPublisher(failures = 0) {
	const calls: EventEnvelope[][] = [];
	let left = failures;
	const publisher: UsagePublisher = async (_env, events) => {
		calls.push([...events]);
		if (left > 0) {
			left--;
			throw new Error("queue unavailable");
		}
	};
	return { calls, publisher };
}

/** A `waitUntil` that keeps what it was given, to await it as the runtime would. */
function lifetimes() {
	const kept: Promise<unknown>[] = [];
	return { waitUntil: (p: Promise<unknown>) => void kept.push(p), settled: () => Promise.all(kept) };
}

describe("UsageBuffer", () => {
	it("sends a full batch at once, as one publish", async () => {
		const { calls, publisher } = recordingPublisher();
		const buffer = new UsageBuffer({ maxEvents: 50, maxDelayMs: 60_000, publisher });
		const life = lifetimes();
		const events = Array.from({ length: 50 }, () => usageAt("t", "2026-01-01T00:00:00.000Z"));
		for (const e of events) buffer.add(env, life.waitUntil, e);
		// Settles without the (one-minute) timer: the 50th event dispatched the batch.
		await life.settled();
		expect(calls).toEqual([events]);
	});

	it("sends a partial batch when its timer fires, kept alive by the opening request's waitUntil", async () => {
		const { calls, publisher } = recordingPublisher();
		const buffer = new UsageBuffer({ maxEvents: 50, maxDelayMs: 20, publisher });
		const opener = lifetimes();
		const later = lifetimes();
		const first = usageAt("t", "2026-01-01T00:00:00.000Z");
		const rest = [usageAt("t", "2026-01-01T00:00:01.000Z"), usageAt("t", "2026-01-01T00:00:02.000Z")];
		buffer.add(env, opener.waitUntil, first);
		for (const e of rest) buffer.add(env, later.waitUntil, e);
		expect(calls).toEqual([]);
		await opener.settled();
		expect(calls).toEqual([[first, ...rest]]);
	});

	it("retries a failed send once", async () => {
		const { calls, publisher } = recordingPublisher(1);
		const buffer = new UsageBuffer({ maxEvents: 2, publisher });
		const life = lifetimes();
		buffer.add(env, life.waitUntil, usageAt("t", "2026-01-01T00:00:00.000Z"));
		buffer.add(env, life.waitUntil, usageAt("t", "2026-01-01T00:00:00.000Z"));
		await life.settled();
		expect(calls.length).toBe(2);
		expect(calls[1]).toEqual(calls[0]);
	});

	it("gives up after the retry without rejecting the request's waitUntil", async () => {
		const { calls, publisher } = recordingPublisher(5);
		const buffer = new UsageBuffer({ maxEvents: 1, publisher });
		const life = lifetimes();
		buffer.add(env, life.waitUntil, usageAt("t", "2026-01-01T00:00:00.000Z"));
		await expect(life.settled()).resolves.toBeDefined();
		expect(calls.length).toBe(2);
	});

	it("flush() sends what is buffered and waits for it", async () => {
		const { calls, publisher } = recordingPublisher();
		const buffer = new UsageBuffer({ maxDelayMs: 60_000, publisher });
		buffer.add(env, () => {}, usageAt("t", "2026-01-01T00:00:00.000Z"));
		await buffer.flush();
		expect(calls.length).toBe(1);
		await buffer.flush();
		expect(calls.length).toBe(1);
	});

	it("publishes to the real queue in batches of at most maxEvents", async () => {
		const sent: number[] = [];
		const buffer = new UsageBuffer({
			maxEvents: 50,
			maxDelayMs: 60_000,
			publisher: async (target, events) => {
				await publish(target, events);
				sent.push(events.length);
			},
		});
		for (let i = 0; i < 60; i++) buffer.add(env, () => {}, usageAt(uniqueId("q"), "2026-01-01T00:00:00.000Z"));
		await buffer.flush();
		expect(sent).toEqual([50, 10]);
	});

	it("recordUsage refuses an invalid event before it is buffered", () => {
		const bad = { ...usageAt("t", "2026-01-01T00:00:00.000Z"), data: { actor: "key:k1" } };
		expect(() => recordUsage(env, () => {}, bad)).toThrow();
		const wrongType = { ...usageAt("t", "2026-01-01T00:00:00.000Z"), type: "audit.record" };
		expect(() => recordUsage(env, () => {}, wrongType)).toThrow(/llm\.usage/);
	});
});

function appFor(tenantId: string) {
	const principal: Principal = {
		tenantId,
		actor: "key:k1",
		via: "api-key",
		keyId: "k1",
		tier: "pro",
		scopes: [],
		tenantLimits: null,
		keyLimits: null,
	};
	const app = new Hono<UsageEnv>();
	app.onError((err, c) => problemResponse(c, toApiError(err)));
	app.use(async (c, next) => {
		c.set("principal", principal);
		await next();
	});
	app.route("/v1/usage", usageRoutes());
	return app;
}

async function report(tenantId: string, query: string): Promise<UsageReport> {
	const res = await appFor(tenantId).request(`/v1/usage${query}`, {}, env);
	expect(res.status).toBe(200);
	return (await res.json()) as UsageReport;
}

describe("GET /v1/usage", () => {
	const a = uniqueId("usage-a");
	const b = uniqueId("usage-b");

	beforeAll(async () => {
		const events = [
			usageAt(a, "2026-01-10T08:00:00.000Z", { promptTokens: 10, completionTokens: 5, costMicroUsd: 100 }),
			usageAt(a, "2026-01-10T09:00:00.000Z", {
				promptTokens: 20,
				completionTokens: 7,
				costMicroUsd: 0,
				cacheHit: true,
				estimated: true,
			}),
			usageAt(a, "2026-01-10T10:00:00.000Z", {
				requested: "smart",
				provider: "anthropic",
				model: "claude-sonnet-4-5",
				promptTokens: 30,
				completionTokens: 11,
				costMicroUsd: 300,
			}),
			usageAt(a, "2026-01-11T23:59:59.000Z", { promptTokens: 1, completionTokens: 2, costMicroUsd: 3 }),
			usageAt(a, "2026-02-01T00:00:00.000Z", { promptTokens: 1000, completionTokens: 1000, costMicroUsd: 1000 }),
			usageAt(b, "2026-01-10T08:00:00.000Z", { promptTokens: 9999, completionTokens: 9999, costMicroUsd: 9999 }),
		];
		for (const e of events) await usageRecorder.handle(e, env);
	});

	it("sums the caller's usage by day, model and provider, with totals", async () => {
		const body = await report(a, "?from=2026-01-01&to=2026-01-31");
		expect(body).toEqual({
			tenantId: a,
			from: "2026-01-01",
			to: "2026-01-31",
			totals: { requests: 4, promptTokens: 61, completionTokens: 25, costMicroUsd: 403, cacheHits: 1 },
			days: [
				{
					day: "2026-01-10",
					model: "claude-sonnet-4-5",
					provider: "anthropic",
					requests: 1,
					promptTokens: 30,
					completionTokens: 11,
					costMicroUsd: 300,
					cacheHits: 0,
					estimatedRequests: 0,
				},
				{
					day: "2026-01-10",
					model: "gpt-4o-mini",
					provider: "openai",
					requests: 2,
					promptTokens: 30,
					completionTokens: 12,
					costMicroUsd: 100,
					cacheHits: 1,
					estimatedRequests: 1,
				},
				{
					day: "2026-01-11",
					model: "gpt-4o-mini",
					provider: "openai",
					requests: 1,
					promptTokens: 1,
					completionTokens: 2,
					costMicroUsd: 3,
					cacheHits: 0,
					estimatedRequests: 0,
				},
			],
		});
	});

	it("filters by served model or requested alias", async () => {
		const byModel = await report(a, "?from=2026-01-01&to=2026-01-31&model=claude-sonnet-4-5");
		expect(byModel.days.map((d) => d.model)).toEqual(["claude-sonnet-4-5"]);
		const byAlias = await report(a, "?from=2026-01-01&to=2026-01-31&model=fast");
		expect(byAlias.days.map((d) => `${d.day} ${d.model}`)).toEqual([
			"2026-01-10 gpt-4o-mini",
			"2026-01-11 gpt-4o-mini",
		]);
		expect(byAlias.totals.requests).toBe(3);
	});

	it("never shows another tenant's rows", async () => {
		const forB = await report(b, "?from=2026-01-01&to=2026-01-31");
		expect(forB.tenantId).toBe(b);
		expect(forB.totals).toEqual({
			requests: 1,
			promptTokens: 9999,
			completionTokens: 9999,
			costMicroUsd: 9999,
			cacheHits: 0,
		});
		const forA = await report(a, "?from=2026-01-10&to=2026-01-10");
		expect(forA.totals.promptTokens).toBe(60);
		const stranger = await report(uniqueId("usage-c"), "?from=2026-01-01&to=2026-12-31");
		expect(stranger.days).toEqual([]);
		expect(stranger.totals.requests).toBe(0);
	});

	it("defaults to the current UTC month, or the month of the one end given", async () => {
		const now = Date.UTC(2028, 1, 14, 23, 30);
		expect(usageRange({}, now)).toEqual({ from: "2028-02-01", to: "2028-02-29" });
		expect(usageRange({ from: "2026-01-10" }, now)).toEqual({ from: "2026-01-10", to: "2026-01-31" });
		expect(usageRange({ to: "2026-12-05" }, now)).toEqual({ from: "2026-12-01", to: "2026-12-05" });
		const current = await report(a, "");
		expect(current.from).toMatch(/^\d{4}-\d{2}-01$/);
		expect(current.from.slice(0, 7)).toBe(current.to.slice(0, 7));
	});

	it("accepts a range of 366 days", async () => {
		const body = await report(a, "?from=2024-01-01&to=2024-12-31");
		expect(body.days).toEqual([]);
	});

	it.each([
		["a malformed date", "?from=2026-1-5", "query.from"],
		["an impossible date", "?from=2026-02-30&to=2026-03-01", "query.from"],
		["to before from", "?from=2026-02-02&to=2026-02-01", "query.to"],
		["more than 366 days", "?from=2025-01-01&to=2026-01-02", "query.to"],
		["an empty model", "?model=", "query.model"],
	])("answers 400 validation-failed for %s", async (_label, query, path) => {
		const res = await appFor(a).request(`/v1/usage${query}`, {}, env);
		expect(res.status).toBe(400);
		expect(res.headers.get("content-type")).toContain("application/problem+json");
		const problem = (await res.json()) as { code: string; errors: Array<{ path: string }> };
		expect(problem.code).toBe("validation-failed");
		expect(problem.errors.map((e) => e.path)).toContain(path);
	});
});
