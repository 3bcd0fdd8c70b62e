/** The LLM response cache: key normalisation and tenant separation, the real Cache API, and stream replay/assembly. */
import { describe, expect, it } from "vitest";
import { cacheKey, chunksToCompletion, completionToChunks, readCache, writeCache } from "../../src/llm/cache";
import type { ChatCompletion, ChatRequest, EmbeddingsResponse } from "../../src/llm/types";

const request: ChatRequest = {
	model: "fast",
	messages: [
		{ role: "system", content: "Be brief." },
		{ role: "user", content: "What is the weather in Paris?" },
	],
	temperature: 0.2,
	tools: [
		{
			type: "function",
			function: {
				name: "weather",
				parameters: { type: "object", properties: { city: { type: "string" }, unit: { type: "string" } } },
			},
		},
	],
};

/** The same request written with every object's keys in another order. */
const reordered: ChatRequest = {
	tools: [
		{
			function: {
				parameters: { properties: { unit: { type: "string" }, city: { type: "string" } }, type: "object" },
				name: "weather",
			},
			type: "function",
		},
	],
	temperature: 0.2,
	messages: [
		{ content: "Be brief.", role: "system" },
		{ content: "What is the weather in Paris?", role: "user" },
	],
	model: "fast",
};

let tenantSeq = 0;
const freshTenant = () => `t-cache-${++tenantSeq}-${crypto.randomUUID()}`;

describe("cacheKey", () => {
	it("ignores the order of keys at every depth", async () => {
		expect(await cacheKey("t1", "chat", "fast", reordered)).toBe(await cacheKey("t1", "chat", "fast", request));
	});

	it("ignores stream, stream_options and user", async () => {
		const streamed = { ...request, stream: true, stream_options: { include_usage: true }, user: "end-user-42" };
		expect(await cacheKey("t1", "chat", "fast", streamed)).toBe(await cacheKey("t1", "chat", "fast", request));
	});

	it("uses the resolved model, not the request's model field", async () => {
		const other = { ...request, model: "something-else" };
		expect(await cacheKey("t1", "chat", "fast", other)).toBe(await cacheKey("t1", "chat", "fast", request));
		expect(await cacheKey("t1", "chat", "smart", request)).not.toBe(await cacheKey("t1", "chat", "fast", request));
	});

	it("differs by tenant, and puts the encoded tenant in the URL path", async () => {
		const a = await cacheKey("tenant/a", "chat", "fast", request);
		const b = await cacheKey("tenant-b", "chat", "fast", request);
		expect(a).not.toBe(b);
		expect(a).toMatch(/^https:\/\/llm-cache\.edgeway\.internal\/tenant%2Fa\/chat\/[0-9a-f]{64}$/);
		// Same hash under another tenant's path would still be another entry; the hash differs too.
		expect(a.split("/").at(-1)).not.toBe(b.split("/").at(-1));
	});

	it("differs by kind and by any field that changes the answer", async () => {
		const embed = { model: "embed", input: "hello" };
		expect(await cacheKey("t1", "embeddings", "embed", embed)).toMatch(/\/t1\/embeddings\/[0-9a-f]{64}$/);
		expect(await cacheKey("t1", "chat", "fast", { ...request, temperature: 0.3 })).not.toBe(
			await cacheKey("t1", "chat", "fast", request),
		);
	});
});

const completion: ChatCompletion = {
	id: "chatcmpl-1",
	object: "chat.completion",
	created: 1_767_225_600,
	model: "gpt-4o-mini",
	choices: [{ index: 0, message: { role: "assistant", content: "Sunny, 21 °C." }, finish_reason: "stop" }],
	usage: { prompt_tokens: 20, completion_tokens: 6, total_tokens: 26 },
};

describe("readCache / writeCache (Cache API in workerd)", () => {
	it("reads back what was written, with who served it", async () => {
		const key = await cacheKey(freshTenant(), "chat", "fast", request);
		const before = Date.now();
		await writeCache(key, { body: completion, provider: "openai", model: "gpt-4o-mini" }, 60);
		const hit = await readCache(key);
		expect(hit).toMatchObject({ body: completion, provider: "openai", model: "gpt-4o-mini" });
		expect(hit?.storedAt).toBeGreaterThanOrEqual(before);
	});

	it("round-trips an embeddings answer", async () => {
		const body: EmbeddingsResponse = {
			object: "list",
			data: [{ object: "embedding", index: 0, embedding: [0.25, -0.5] }],
			model: "text-embedding-3-small",
			usage: { prompt_tokens: 1, total_tokens: 1 },
		};
		const key = await cacheKey(freshTenant(), "embeddings", "embed", { model: "embed", input: "hi" });
		await writeCache(key, { body, provider: "openai", model: "text-embedding-3-small" }, 60);
		expect((await readCache(key))?.body).toEqual(body);
	});

	it("misses on a key never written", async () => {
		expect(await readCache(await cacheKey(freshTenant(), "chat", "fast", request))).toBeNull();
	});

	it("stores nothing when the TTL is 0", async () => {
		const key = await cacheKey(freshTenant(), "chat", "fast", request);
		await writeCache(key, { body: completion, provider: "openai", model: "gpt-4o-mini" }, 0);
		expect(await readCache(key)).toBeNull();
	});

	it("never serves one tenant's entry to another", async () => {
		const a = freshTenant();
		const b = freshTenant();
		await writeCache(
			await cacheKey(a, "chat", "fast", request),
			{ body: completion, provider: "openai", model: "gpt-4o-mini" },
			60,
		);
		expect(await readCache(await cacheKey(a, "chat", "fast", request))).not.toBeNull();
		expect(await readCache(await cacheKey(b, "chat", "fast", request))).toBeNull();
	});
});

const withTools: ChatCompletion = {
	id: "chatcmpl-2",
	object: "chat.completion",
	created: 1_767_225_601,
	model: "claude-sonnet-4-5",
	choices: [
		{
			index: 0,
			message: {
				role: "assistant",
				content: `Checking both cities for you 🌦️ — ${"this sentence is long enough to be cut into pieces. ".repeat(6)}`,
				tool_calls: [
					{ id: "call_a", type: "function", function: { name: "weather", arguments: '{"city":"Paris","unit":"c"}' } },
					{
						id: "call_b",
						type: "function",
						function: {
							name: "weather",
							arguments: JSON.stringify({ city: "Tokyo", unit: "c", note: "x".repeat(80) }),
						},
					},
				],
			},
			finish_reason: "tool_calls",
		},
	],
	usage: { prompt_tokens: 50, completion_tokens: 40, total_tokens: 90 },
};

describe("completionToChunks / chunksToCompletion", () => {
	it("replays content and two tool calls as an OpenAI stream that assembles back to the completion", () => {
		const chunks = completionToChunks(withTools);
		expect(chunksToCompletion(chunks)).toEqual(withTools);

		expect(chunks[0]?.choices[0]?.delta).toEqual({ role: "assistant", content: "" });
		const contentChunks = chunks.filter((c) => c.choices[0]?.delta.content);
		expect(contentChunks.length).toBeGreaterThan(1);

		const toolDeltas = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
		const firsts = toolDeltas.filter((d) => d.id);
		expect(firsts).toEqual([
			{ index: 0, id: "call_a", type: "function", function: { name: "weather", arguments: "" } },
			{ index: 1, id: "call_b", type: "function", function: { name: "weather", arguments: "" } },
		]);
		for (const d of toolDeltas.filter((d) => !d.id)) expect(Object.keys(d.function ?? {})).toEqual(["arguments"]);
		expect(toolDeltas.filter((d) => d.index === 1 && !d.id).length).toBeGreaterThan(1);

		const finish = chunks.at(-2);
		expect(finish?.choices).toEqual([{ index: 0, delta: {}, finish_reason: "tool_calls" }]);
		expect(chunks.at(-1)).toMatchObject({ choices: [], usage: withTools.usage });
		expect(new Set(chunks.map((c) => c.id))).toEqual(new Set(["chatcmpl-2"]));
	});

	it("never cuts a surrogate pair between two chunks", () => {
		// Odd length before the emoji puts every naive cut (at multiples of 32) inside a pair.
		const content = `a${"😀".repeat(60)}`;
		const pieces = completionToChunks({
			...completion,
			choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
		})
			.map((c) => c.choices[0]?.delta.content)
			.filter((p): p is string => Boolean(p));
		expect(pieces.length).toBeGreaterThan(1);
		expect(pieces.join("")).toBe(content);
		// A boolean, so a failure never puts a lone surrogate into the runner's messages.
		const cutPairs = pieces.filter((p) => /[\uD800-\uDBFF]$/.test(p) || /^[\uDC00-\uDFFF]/.test(p));
		expect(cutPairs.length).toBe(0);
	});

	it("keeps null content null and sends no usage chunk without usage", () => {
		const bare: ChatCompletion = {
			id: "chatcmpl-3",
			object: "chat.completion",
			created: 1,
			model: "m",
			choices: [
				{
					index: 0,
					message: {
						role: "assistant",
						content: null,
						tool_calls: [{ id: "call_x", type: "function", function: { name: "noop", arguments: "" } }],
					},
					finish_reason: "tool_calls",
				},
			],
		};
		const chunks = completionToChunks(bare);
		expect(chunks.every((c) => c.choices.length > 0 && c.usage === undefined)).toBe(true);
		expect(chunksToCompletion(chunks)).toEqual(bare);
	});

	it("assembles interleaved provider deltas by tool index and takes usage from the last chunk", () => {
		const base = { id: "s", object: "chat.completion.chunk" as const, created: 5, model: "m" };
		const assembled = chunksToCompletion([
			{ ...base, choices: [{ index: 0, delta: { role: "assistant" }, finish_reason: null }] },
			{
				...base,
				choices: [
					{
						index: 0,
						delta: { tool_calls: [{ index: 1, id: "b", type: "function", function: { name: "g", arguments: "{" } }] },
						finish_reason: null,
					},
				],
			},
			{
				...base,
				choices: [
					{
						index: 0,
						delta: { tool_calls: [{ index: 0, id: "a", type: "function", function: { name: "f", arguments: "[1" } }] },
						finish_reason: null,
					},
				],
			},
			{
				...base,
				choices: [
					{ index: 0, delta: { tool_calls: [{ index: 1, function: { arguments: "}" } }] }, finish_reason: null },
				],
			},
			{
				...base,
				choices: [
					{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: "]" } }] }, finish_reason: null },
				],
			},
			{ ...base, choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }] },
			{ ...base, choices: [], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } },
		]);
		expect(assembled.choices[0]?.message.tool_calls).toEqual([
			{ id: "a", type: "function", function: { name: "f", arguments: "[1]" } },
			{ id: "b", type: "function", function: { name: "g", arguments: "{}" } },
		]);
		expect(assembled.choices[0]?.message.content).toBeNull();
		expect(assembled.choices[0]?.finish_reason).toBe("tool_calls");
		expect(assembled.usage).toEqual({ prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
	});
});
