/**
 * LLM usage on the real local D1 and queue: token estimates, the recorder's once-only batch insert of
 * an event's records, the per-isolate usage buffer (one event per tenant, splits by count and size,
 * size and timer flushes, one retry), `recordUsage`, and `GET /v1/usage` through a small app that sets
 * the principal by hand (by day and model, tenant separation, bad queries).
 */
import { env } from "cloudflare:workers";
import { asc, eq } from "drizzle-orm";
import { Hono } from "hono";
import { beforeAll, describe, expect, it } from "vitest";
import type { Principal } from "../../src/auth";
import { database, llmUsage } from "../../src/db";
import { type EventEnvelope, EventEnvelopeSchema, MAX_MESSAGE_BYTES, newEvent, publish } from "../../src/events";
import type { AppEnv } from "../../src/http";
import { problemResponse, toApiError } from "../../src/http";
import type { ChatRequest } from "../../src/llm/types";
import {
	EVENT_RECORD_BYTES,
	EVENT_RECORDS,
	estimateEmbeddingsTokens,
	estimatePromptTokens,
	estimateTokens,
	flushUsage,
	LLM_USAGE_EVENT,
	MAX_EVENT_RECORDS,
	MESSAGE_OVERHEAD_TOKENS,
	type PendingUsage,
	REPLY_PRIMING_TOKENS,
	recordUsage,
	UsageBuffer,
	UsageEventDataSchema,
	type UsagePublisher,
	type UsageRecord,
	usageRecorder,
} from "../../src/llm/usage";
import { type UsageReport, usageRange, usageRoutes } from "../../src/llm/usage-routes";
import { uniqueId } from "../helpers/identity";

type UsageFields = Omit<UsageRecord, "id" | "time">;

function fields(overrides: Partial<UsageFields> = {}): UsageFields {
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

function record(time = "2026-01-01T00:00:00.000Z", overrides: Partial<UsageFields> = {}): UsageRecord {
	return { id: `use_${crypto.randomUUID().replace(/-/g, "")}`, time, ...fields(overrides) };
}

function usageEvent(tenantId: string, records: UsageRecord[]): EventEnvelope {
	return newEvent({ type: LLM_USAGE_EVENT, tenantId, source: "llm", data: { records } });
}

function pending(tenantId: string, traceparent?: string): PendingUsage {
	return { tenantId, traceparent, record: record() };
}

/** The records an event carries, checked against the envelope and data schemas. */
function recordsOf(event: EventEnvelope): UsageRecord[] {
	return UsageEventDataSchema.parse(EventEnvelopeSchema.parse(event).data).records;
}

function rowsOf(tenantId: string) {
	return database(env.DB)
		.select()
		.from(llmUsage)
		.where(eq(llmUsage.tenantId, tenantId))
		.orderBy(asc(llmUsage.createdAt), asc(llmUsage.id))
		.all();
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
		expect(usageRecorder.handles(usageEvent("t", [record()]))).toBe(true);
		expect(usageRecorder.handles(newEvent({ type: "audit.record", tenantId: "t", source: "x", data: {} }))).toBe(false);
	});

	it("writes each record of one event as a row of the event's tenant, dated by the record", async () => {
		const tenantId = uniqueId("usage");
		const first = record("2026-03-04T23:59:59.999Z", { cacheHit: true, estimated: true, byok: true });
		const second = record("2026-03-05T00:00:00.000Z", { keyId: undefined, requestId: undefined, provider: null });
		await usageRecorder.handle(usageEvent(tenantId, [first, second]), env);
		const common = {
			tenantId,
			actor: "key:k1",
			operation: "chat",
			requested: "fast",
			model: "gpt-4o-mini",
			promptTokens: 10,
			completionTokens: 5,
			costMicroUsd: 100,
			latencyMs: 42,
			status: 200,
			attempts: 1,
		};
		expect(await rowsOf(tenantId)).toEqual([
			{
				...common,
				id: first.id,
				keyId: "k1",
				requestId: "req-1",
				provider: "openai",
				estimated: 1,
				cacheHit: 1,
				byok: 1,
				day: "2026-03-04",
				createdAt: Date.parse("2026-03-04T23:59:59.999Z"),
			},
			{
				...common,
				id: second.id,
				keyId: null,
				requestId: null,
				provider: null,
				estimated: 0,
				cacheHit: 0,
				byok: 0,
				day: "2026-03-05",
				createdAt: Date.parse("2026-03-05T00:00:00.000Z"),
			},
		]);
	});

	it(`writes all ${MAX_EVENT_RECORDS} records of a full event in its one statement`, async () => {
		const tenantId = uniqueId("usage");
		const records = Array.from({ length: MAX_EVENT_RECORDS }, (_, i) =>
			record(new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(), { promptTokens: i }),
		);
		await usageRecorder.handle(usageEvent(tenantId, records), env);
		const rows = await rowsOf(tenantId);
		expect(rows.map((r) => [r.id, r.promptTokens])).toEqual(records.map((r) => [r.id, r.promptTokens]));
	});

	it("inserts nothing twice when an event is redelivered or its records come again in another event", async () => {
		const tenantId = uniqueId("usage");
		const first = record();
		const records = [first, record(), record()];
		const event = usageEvent(tenantId, records);
		await usageRecorder.handle(event, env);
		await usageRecorder.handle(event, env);
		expect((await rowsOf(tenantId)).length).toBe(3);
		// A replay, or a retried send, under a new event id: the known records keep their first rows.
		const extra = record();
		const again = usageEvent(tenantId, [{ ...first, costMicroUsd: 999_999 }, extra]);
		await usageRecorder.handle(again, env);
		const rows = await rowsOf(tenantId);
		expect(rows.map((r) => r.id).sort()).toEqual([...records, extra].map((r) => r.id).sort());
		expect(rows.map((r) => r.costMicroUsd)).toEqual([100, 100, 100, 100]);
	});

	it.each([
		["records that are not usage records", { records: [{ actor: "key:k1" }] }],
		["no records", { records: [] }],
		[
			`more than ${MAX_EVENT_RECORDS} records`,
			{ records: Array.from({ length: MAX_EVENT_RECORDS + 1 }, () => record()) },
		],
		["a bare record (no records list)", record()],
	])("refuses %s, writing nothing (so the event dead-letters)", async (_label, data) => {
		const tenantId = uniqueId("usage");
		const event = { ...usageEvent(tenantId, [record()]), data };
		await expect(usageRecorder.handle(event, env)).rejects.toThrow();
		expect(await rowsOf(tenantId)).toEqual([]);
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
	return { waitUntil: (p: Promise<unknown>) => void kept.push(p), kept, settled: () => Promise.all(kept) };
}

describe("UsageBuffer", () => {
	it("sends a full batch at once, one tenant's records as one event", async () => {
		const { calls, publisher } = recordingPublisher();
		const buffer = new UsageBuffer({ maxRecords: EVENT_RECORDS, maxDelayMs: 60_000, publisher });
		const life = lifetimes();
		const usages = Array.from({ length: EVENT_RECORDS }, (_, i) => pending("t", `tp-${i}`));
		for (const u of usages) buffer.add(env, life.waitUntil, u);
		// Settles without the (one-minute) timer: the 50th record dispatched the batch.
		await life.settled();
		expect(calls.length).toBe(1);
		const [event] = calls[0] ?? [];
		expect(event).toMatchObject({ type: LLM_USAGE_EVENT, tenantId: "t", source: "llm", traceparent: "tp-0" });
		expect(event && recordsOf(event)).toEqual(usages.map((u) => u.record));
	});

	it("makes one event per tenant of a flush, each with its first record's traceparent", async () => {
		const { calls, publisher } = recordingPublisher();
		const buffer = new UsageBuffer({ maxDelayMs: 60_000, publisher });
		const a1 = pending("a", "tp-a1");
		const b1 = pending("b");
		const a2 = pending("a", "tp-a2");
		const b2 = pending("b", "tp-b2");
		for (const u of [a1, b1, a2, b2]) buffer.add(env, () => {}, u);
		await buffer.flush();
		expect(calls.length).toBe(1);
		const events = calls[0] ?? [];
		expect(events.map((e) => [e.tenantId, e.traceparent, recordsOf(e)])).toEqual([
			["a", "tp-a1", [a1.record, a2.record]],
			["b", undefined, [b1.record, b2.record]],
		]);
		expect(new Set(events.map((e) => e.id)).size).toBe(2);
	});

	it(`splits a tenant's records into events of at most ${EVENT_RECORDS}`, async () => {
		const { calls, publisher } = recordingPublisher();
		const buffer = new UsageBuffer({ maxRecords: 1000, maxDelayMs: 60_000, publisher });
		const usages = Array.from({ length: 2 * EVENT_RECORDS + 20 }, () => pending("t"));
		for (const u of usages) buffer.add(env, () => {}, u);
		await buffer.flush();
		const events = calls[0] ?? [];
		expect(events.map((e) => recordsOf(e).length)).toEqual([EVENT_RECORDS, EVENT_RECORDS, 20]);
		expect(events.flatMap(recordsOf)).toEqual(usages.map((u) => u.record));
	});

	it("splits by encoded size, and the real queue takes every message", async () => {
		const sent: EventEnvelope[][] = [];
		const buffer = new UsageBuffer({
			maxDelayMs: 60_000,
			publisher: async (target, events) => {
				await publish(target, events);
				sent.push(events);
			},
		});
		// The largest record the schema allows, each character escaped to six bytes of JSON.
		const wide = (n: number) => "\u0001".repeat(n);
		const tenantId = uniqueId("usage-wide");
		const usages = Array.from({ length: EVENT_RECORDS }, () => ({
			tenantId,
			record: record("2026-01-01T00:00:00.000Z", {
				actor: wide(256),
				keyId: wide(128),
				requestId: wide(128),
				requested: wide(256),
				provider: wide(128),
				model: wide(256),
			}),
		}));
		for (const u of usages) buffer.add(env, () => {}, u);
		await buffer.flush();
		expect(sent.length).toBe(1);
		const events = sent[0] ?? [];
		expect(events.length).toBeGreaterThan(1);
		for (const e of events) {
			const recordBytes = new TextEncoder().encode(JSON.stringify(recordsOf(e))).byteLength;
			expect(recordBytes).toBeLessThanOrEqual(EVENT_RECORD_BYTES);
			expect(new TextEncoder().encode(JSON.stringify(e)).byteLength).toBeLessThan(MAX_MESSAGE_BYTES);
		}
		expect(events.flatMap(recordsOf)).toEqual(usages.map((u) => u.record));
	});

	it("sends a partial batch when its timer fires, kept alive by the opening request's waitUntil", async () => {
		const { calls, publisher } = recordingPublisher();
		const buffer = new UsageBuffer({ maxRecords: 50, maxDelayMs: 20, publisher });
		const opener = lifetimes();
		const later = lifetimes();
		const first = pending("t");
		const rest = [pending("t"), pending("t")];
		buffer.add(env, opener.waitUntil, first);
		for (const u of rest) buffer.add(env, later.waitUntil, u);
		expect(calls).toEqual([]);
		expect(later.kept).toEqual([]);
		await opener.settled();
		expect(calls.map((events) => events.map(recordsOf))).toEqual([[[first, ...rest].map((u) => u.record)]]);
	});

	it("retries a failed send once, with the same events", async () => {
		const { calls, publisher } = recordingPublisher(1);
		const buffer = new UsageBuffer({ maxRecords: 2, publisher });
		const life = lifetimes();
		buffer.add(env, life.waitUntil, pending("t"));
		buffer.add(env, life.waitUntil, pending("u"));
		await life.settled();
		expect(calls.length).toBe(2);
		expect(calls[0]?.length).toBe(2);
		expect(calls[1]).toEqual(calls[0]);
	});

	it("gives up after the retry without rejecting the request's waitUntil", async () => {
		const { calls, publisher } = recordingPublisher(5);
		const buffer = new UsageBuffer({ maxRecords: 1, publisher });
		const life = lifetimes();
		buffer.add(env, life.waitUntil, pending("t"));
		await expect(life.settled()).resolves.toBeDefined();
		expect(calls.length).toBe(2);
	});

	it("flush() sends what is buffered and waits for it", async () => {
		const { calls, publisher } = recordingPublisher();
		const buffer = new UsageBuffer({ maxDelayMs: 60_000, publisher });
		buffer.add(env, () => {}, pending("t"));
		await buffer.flush();
		expect(calls.length).toBe(1);
		await buffer.flush();
		expect(calls.length).toBe(1);
	});

	it("refuses a batch size below one", () => {
		expect(() => new UsageBuffer({ maxRecords: 0 })).toThrow(RangeError);
	});
});

describe("recordUsage", () => {
	it("gives each record a fresh id and the time the request ended, and buffers it", async () => {
		await flushUsage();
		const tenantId = uniqueId("usage-rec");
		const life = lifetimes();
		const before = Date.now();
		const one = recordUsage(env, life.waitUntil, { tenantId, traceparent: "tp", record: fields() });
		const two = recordUsage(env, life.waitUntil, { tenantId, record: fields({ promptTokens: 7 }) });
		const after = Date.now();
		expect(one).toEqual({ ...fields(), id: one.id, time: one.time });
		expect(two.promptTokens).toBe(7);
		for (const r of [one, two]) {
			expect(r.id).toMatch(/^use_[0-9a-f]{32}$/);
			expect(Date.parse(r.time)).toBeGreaterThanOrEqual(before);
			expect(Date.parse(r.time)).toBeLessThanOrEqual(after);
		}
		expect(two.id).not.toBe(one.id);
		// The first record opened a batch, kept alive by its request.
		expect(life.kept.length).toBe(1);
		await flushUsage();
		await life.settled();
	});

	it.each([
		["an invalid record", { tenantId: "t", record: fields({ actor: "" }) }],
		["an empty tenant", { tenantId: "", record: fields() }],
	])("refuses %s before it is buffered", async (_label, usage) => {
		await flushUsage();
		const life = lifetimes();
		expect(() => recordUsage(env, life.waitUntil, usage)).toThrow();
		expect(life.kept).toEqual([]);
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
	const app = new Hono<AppEnv>();
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
		await usageRecorder.handle(
			usageEvent(a, [
				record("2026-01-10T08:00:00.000Z", { promptTokens: 10, completionTokens: 5, costMicroUsd: 100 }),
				record("2026-01-10T09:00:00.000Z", {
					promptTokens: 20,
					completionTokens: 7,
					costMicroUsd: 0,
					cacheHit: true,
					estimated: true,
				}),
				record("2026-01-10T10:00:00.000Z", {
					requested: "smart",
					provider: "anthropic",
					model: "claude-sonnet-4-5",
					promptTokens: 30,
					completionTokens: 11,
					costMicroUsd: 300,
				}),
				record("2026-01-11T23:59:59.000Z", { promptTokens: 1, completionTokens: 2, costMicroUsd: 3 }),
				record("2026-02-01T00:00:00.000Z", { promptTokens: 1000, completionTokens: 1000, costMicroUsd: 1000 }),
			]),
			env,
		);
		await usageRecorder.handle(
			usageEvent(b, [
				record("2026-01-10T08:00:00.000Z", { promptTokens: 9999, completionTokens: 9999, costMicroUsd: 9999 }),
			]),
			env,
		);
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
