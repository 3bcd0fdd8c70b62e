/** The Workers AI provider against a fake `AI` binding: request translation, answers, streams, tool calls, errors, embeddings. */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { ProviderCall } from "../../src/llm/providers/interface";
import { type AiBinding, workersAiProvider } from "../../src/llm/providers/workers-ai";
import type { ChatCompletionChunk, ChatRequest, EmbeddingsRequest } from "../../src/llm/types";
import { collect, providerError } from "../helpers/llm";

const MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast";
const encoder = new TextEncoder();

interface Run {
	model: string;
	input: Record<string, unknown>;
	options: { signal?: AbortSignal } | undefined;
}

/** A binding that records its runs and answers with `answer`. */
function fakeAi(answer: (run: Run) => unknown) {
	const runs: Run[] = [];
	const ai: AiBinding = {
		async run(model, input, options) {
			const run = { model, input, options };
			runs.push(run);
			return answer(run);
		},
	};
	return { provider: workersAiProvider("workers-ai", { ai: () => ai }), runs };
}

/** Workers AI's stream: SSE bytes, cut into 5-byte pieces so events straddle reads. */
function sse(events: unknown[]): ReadableStream<Uint8Array> {
	const text = events.map((e) => `data: ${typeof e === "string" ? e : JSON.stringify(e)}\n\n`).join("");
	const bytes = encoder.encode(text);
	let offset = 0;
	return new ReadableStream({
		pull(controller) {
			if (offset >= bytes.length) return controller.close();
			controller.enqueue(bytes.slice(offset, offset + 5));
			offset += 5;
		},
	});
}

function call<R>(request: R, extra: Partial<ProviderCall<R>> = {}): ProviderCall<R> {
	return { model: MODEL, request, signal: new AbortController().signal, ...extra };
}
const deltas = (chunks: ChatCompletionChunk[]) => chunks.map((c) => c.choices[0]?.delta);

const WEATHER_TOOL = {
	type: "function" as const,
	function: {
		name: "get_weather",
		description: "Weather for a city",
		parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
	},
};
const TIME_TOOL = { type: "function" as const, function: { name: "get_time" } };

const SIMPLE: ChatRequest = { model: "fast", messages: [{ role: "user", content: "hi" }] };

describe("workersAiProvider without a binding", () => {
	it("fails every call as a connection error where AI is not bound (locally)", async () => {
		const provider = workersAiProvider("workers-ai", { ai: () => env.AI });
		expect(provider.kind).toBe("workers-ai");
		for (const attempt of [
			provider.chat(call(SIMPLE)),
			provider.chatStream(call(SIMPLE)),
			provider.embed?.(call({ model: "embed", input: "x" })) ?? Promise.resolve(),
		]) {
			const err = await providerError(attempt);
			expect(err.kind).toBe("connection");
			expect(err.message).toBe("Workers AI is not bound here");
		}
	});
});

describe("workersAiProvider request translation", () => {
	it("sends messages, tools and sampling settings in Workers AI's shape", async () => {
		const { provider, runs } = fakeAi(() => ({ response: "ok" }));
		const controller = new AbortController();
		const request: ChatRequest = {
			model: "fast",
			messages: [
				{ role: "system", content: "Be brief." },
				{ role: "developer", content: [{ type: "text", text: "Use tools." }] },
				{
					role: "user",
					content: [
						{ type: "text", text: "Weather" },
						{ type: "text", text: "in Paris?" },
					],
				},
				{
					role: "assistant",
					content: null,
					tool_calls: [
						{ id: "call_a", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
					],
				},
				{ role: "tool", tool_call_id: "call_a", content: "18°C" },
			],
			tools: [WEATHER_TOOL, TIME_TOOL],
			tool_choice: "auto",
			max_tokens: 50,
			max_completion_tokens: 100,
			temperature: 0.3,
			top_p: 0.9,
			seed: 7,
			frequency_penalty: 0.1,
			presence_penalty: null,
			stop: ["END"],
			response_format: { type: "json_schema", json_schema: { name: "w", schema: { type: "object" } } },
		};
		await provider.chat(call(request, { signal: controller.signal }));

		expect(runs).toHaveLength(1);
		expect(runs[0]?.model).toBe(MODEL);
		expect(runs[0]?.options?.signal).toBe(controller.signal);
		expect(runs[0]?.input).toEqual({
			messages: [
				{ role: "system", content: "Be brief." },
				{ role: "system", content: "Use tools." },
				{ role: "user", content: "Weather\nin Paris?" },
				{
					role: "assistant",
					content: "",
					tool_calls: [
						{ id: "call_a", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
					],
				},
				{ role: "tool", content: "18°C", tool_call_id: "call_a", name: "get_weather" },
			],
			tools: [
				WEATHER_TOOL,
				{
					type: "function",
					function: { name: "get_time", description: "", parameters: { type: "object", properties: {} } },
				},
			],
			max_tokens: 100,
			temperature: 0.3,
			top_p: 0.9,
			seed: 7,
			frequency_penalty: 0.1,
			response_format: { type: "json_schema", json_schema: { type: "object" } },
		});
	});

	it("keeps image parts, honours tool_choice none and a named tool, and maps json_object", async () => {
		const { provider, runs } = fakeAi(() => ({ response: "ok" }));
		const image = [
			{ type: "text" as const, text: "What is this?" },
			{ type: "image_url" as const, image_url: { url: "https://img.test/cat.png" } },
		];
		await provider.chat(
			call({
				...SIMPLE,
				messages: [{ role: "user", content: image }],
				tools: [WEATHER_TOOL],
				tool_choice: "none",
				response_format: { type: "json_object" },
			}),
		);
		await provider.chat(
			call({
				...SIMPLE,
				tools: [WEATHER_TOOL, TIME_TOOL],
				tool_choice: { type: "function", function: { name: "get_weather" } },
			}),
		);
		expect(runs[0]?.input).toEqual({
			messages: [{ role: "user", content: image }],
			response_format: { type: "json_object" },
		});
		expect(runs[1]?.input.tools).toEqual([WEATHER_TOOL]);

		const err = await providerError(
			provider.chat(
				call({ ...SIMPLE, tools: [TIME_TOOL], tool_choice: { type: "function", function: { name: "nope" } } }),
			),
		);
		expect(err.status).toBe(400);
		expect(runs).toHaveLength(2);
	});
});

describe("workersAiProvider chat", () => {
	it("turns native tool calls (name + arguments object, no id) into OpenAI tool calls with made-up ids", async () => {
		const { provider } = fakeAi(() => ({
			response: null,
			tool_calls: [
				{ name: "get_weather", arguments: { city: "Paris" } },
				{ name: "get_time", arguments: {} },
			],
			usage: { prompt_tokens: 40, completion_tokens: 12, total_tokens: 52 },
		}));
		const answer = await provider.chat(call({ ...SIMPLE, tools: [WEATHER_TOOL, TIME_TOOL] }));

		expect(answer.id).toMatch(/^chatcmpl-[0-9a-f-]{36}$/);
		expect(answer.object).toBe("chat.completion");
		expect(answer.model).toBe(MODEL);
		expect(answer.usage).toEqual({ prompt_tokens: 40, completion_tokens: 12, total_tokens: 52 });
		const choice = answer.choices[0];
		expect(choice?.finish_reason).toBe("tool_calls");
		expect(choice?.message.content).toBeNull();
		const calls = choice?.message.tool_calls ?? [];
		expect(calls.map((c) => [c.type, c.function.name, JSON.parse(c.function.arguments)])).toEqual([
			["function", "get_weather", { city: "Paris" }],
			["function", "get_time", {}],
		]);
		for (const c of calls) expect(c.id).toMatch(/^call_[0-9a-f]{24}$/);
		expect(calls[0]?.id).not.toBe(calls[1]?.id);
	});

	it("keeps the ids and string arguments of OpenAI-dialect answers", async () => {
		const { provider } = fakeAi(() => ({
			id: "x",
			object: "chat.completion",
			choices: [
				{
					index: 0,
					message: {
						role: "assistant",
						content: "",
						tool_calls: [
							{ id: "chatcmpl-tool-9", type: "function", function: { name: "get_time", arguments: '{"tz":"UTC"}' } },
						],
					},
					finish_reason: "tool_calls",
				},
			],
			usage: { prompt_tokens: 10, completion_tokens: 5 },
		}));
		const answer = await provider.chat(call({ ...SIMPLE, tools: [TIME_TOOL] }));
		expect(answer.choices[0]?.message.tool_calls).toEqual([
			{ id: "chatcmpl-tool-9", type: "function", function: { name: "get_time", arguments: '{"tz":"UTC"}' } },
		]);
		expect(answer.usage).toEqual({ prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 });
	});

	it("answers text with finish_reason stop; a JSON-mode object becomes its JSON text; no usage stays absent", async () => {
		const { provider } = fakeAi(() => ({ response: { city: "Paris", temp: 18 } }));
		const answer = await provider.chat(call({ ...SIMPLE, response_format: { type: "json_object" } }));
		expect(answer.choices[0]?.message).toEqual({ role: "assistant", content: '{"city":"Paris","temp":18}' });
		expect(answer.choices[0]?.finish_reason).toBe("stop");
		expect(answer.usage).toBeUndefined();
	});

	it("reports an answer it cannot read as a protocol error", async () => {
		const { provider } = fakeAi(() => ({ request_id: "queued" }));
		const err = await providerError(provider.chat(call(SIMPLE)));
		expect(err.kind).toBe("protocol");
	});
});

describe("workersAiProvider chatStream", () => {
	it("translates a native text stream: role chunk, content deltas, finish, usage chunk", async () => {
		const { provider, runs } = fakeAi(() =>
			sse([
				{ response: "Hel", p: "abc" },
				{ response: "lo" },
				{ response: "", usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 } },
				"[DONE]",
			]),
		);
		const chunks = await collect(await provider.chatStream(call(SIMPLE)));

		expect(runs[0]?.input.stream).toBe(true);
		expect(deltas(chunks)).toEqual([
			{ role: "assistant", content: "" },
			{ content: "Hel" },
			{ content: "lo" },
			{},
			undefined,
		]);
		expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe("stop");
		expect(chunks.at(-1)).toMatchObject({
			choices: [],
			usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 },
		});
		const ids = new Set(chunks.map((c) => c.id));
		expect(ids.size).toBe(1);
		for (const c of chunks) {
			expect(c.object).toBe("chat.completion.chunk");
			expect(c.model).toBe(MODEL);
		}
	});

	it("translates streamed tool-call deltas (by index, with a null closing entry) into OpenAI tool call deltas", async () => {
		const { provider } = fakeAi(() =>
			sse([
				{ response: "", tool_calls: [{ index: 0, id: "t-1", type: "function", function: { name: "get_weather" } }] },
				{ response: "", tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] },
				{ response: "", tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] },
				{ response: "", tool_calls: [{ index: 1, function: { name: "get_time", arguments: "{}" } }] },
				{ response: "", tool_calls: [{ id: null, type: null, function: { name: null, arguments: null } }] },
				{ response: "", usage: { prompt_tokens: 30, completion_tokens: 20, total_tokens: 50 } },
				"[DONE]",
			]),
		);
		const chunks = await collect(await provider.chatStream(call({ ...SIMPLE, tools: [WEATHER_TOOL, TIME_TOOL] })));
		const toolDeltas = deltas(chunks).flatMap((d) => d?.tool_calls ?? []);

		expect(toolDeltas[0]).toEqual({
			index: 0,
			id: "t-1",
			type: "function",
			function: { name: "get_weather", arguments: "" },
		});
		expect(toolDeltas[1]).toEqual({ index: 0, function: { arguments: '{"city":' } });
		expect(toolDeltas[2]).toEqual({ index: 0, function: { arguments: '"Paris"}' } });
		expect(toolDeltas[3]).toMatchObject({
			index: 1,
			type: "function",
			function: { name: "get_time", arguments: "{}" },
		});
		expect(toolDeltas[3]?.id).toMatch(/^call_[0-9a-f]{24}$/);
		expect(toolDeltas).toHaveLength(4);
		expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe("tool_calls");
		expect(chunks.at(-1)?.usage?.total_tokens).toBe(50);
	});

	it("translates whole tool calls sent without an index, and OpenAI-dialect deltas", async () => {
		const { provider } = fakeAi(() =>
			sse([
				{ choices: [{ index: 0, delta: { role: "assistant", content: "On it." } }] },
				{ response: "", tool_calls: [{ name: "get_weather", arguments: { city: "Oslo" } }] },
				"[DONE]",
			]),
		);
		const chunks = await collect(await provider.chatStream(call({ ...SIMPLE, tools: [WEATHER_TOOL] })));
		expect(deltas(chunks)[1]).toEqual({ content: "On it." });
		const toolDeltas = deltas(chunks).flatMap((d) => d?.tool_calls ?? []);
		expect(toolDeltas).toEqual([
			{
				index: 0,
				id: expect.stringMatching(/^call_/),
				type: "function",
				function: { name: "get_weather", arguments: '{"city":"Oslo"}' },
			},
		]);
		expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe("tool_calls");
		expect(chunks.at(-1)?.usage).toBeUndefined();
	});

	it("fails with a stream error when the stream ends without [DONE] or carries an error", async () => {
		for (const events of [[{ response: "par" }], [{ response: "a" }, { error: "model crashed" }, "[DONE]"]]) {
			const { provider } = fakeAi(() => sse(events));
			const stream = await provider.chatStream(call(SIMPLE));
			const err = await providerError(collect(stream));
			expect(err.kind).toBe("stream");
		}
	});

	it("replays a whole answer as a stream when the model does not stream", async () => {
		const { provider } = fakeAi(() => ({
			response: "All at once",
			usage: { prompt_tokens: 2, completion_tokens: 3, total_tokens: 5 },
		}));
		const chunks = await collect(await provider.chatStream(call(SIMPLE)));
		expect(deltas(chunks)).toEqual([{ role: "assistant", content: "" }, { content: "All at once" }, {}, undefined]);
		expect(chunks.at(-1)?.usage?.total_tokens).toBe(5);
	});
});

describe("workersAiProvider errors", () => {
	it("maps binding errors: capacity and limits to 429, bad input to 400, the rest to 502", async () => {
		const cases: Array<[unknown, number, boolean]> = [
			[new Error("3040: Capacity temporarily exceeded, please try again."), 429, false],
			[new Error("InferenceUpstreamError: 3036: You have used up your daily free allocation"), 429, false],
			[new Error("Rate limited, too many requests"), 429, false],
			[new Error("AiError: Bad input: Error: required properties at '/' are 'messages'"), 400, true],
			[new Error("5004: Invalid data type for base64 input"), 400, true],
			[new Error("5007: No such model @cf/nope or task"), 502, false],
			[new Error("3023: Service unavailable for account"), 502, false],
			[new Error("Network connection lost."), 502, false],
			["a string, not an Error", 502, false],
		];
		for (const [thrown, status, passesMessage] of cases) {
			const { provider } = fakeAi(() => {
				throw thrown;
			});
			const err = await providerError(provider.chat(call(SIMPLE)));
			expect(err.kind).toBe("http");
			expect(err.status).toBe(status);
			expect(err.upstreamMessage !== undefined).toBe(passesMessage);
		}
	});

	it("maps Workers AI's own timeout code to a timeout", async () => {
		const { provider } = fakeAi(() => {
			throw new Error("3007: Request timeout");
		});
		const err = await providerError(provider.chatStream(call(SIMPLE)));
		expect(err.kind).toBe("timeout");
	});

	it("reports an aborted call as a timeout even if the binding ignores the signal", async () => {
		const controller = new AbortController();
		const { provider } = fakeAi(() => new Promise(() => {}));
		const pending = provider.chat(call(SIMPLE, { signal: controller.signal }));
		controller.abort();
		const err = await providerError(pending);
		expect(err.kind).toBe("timeout");
	});
});

describe("workersAiProvider embed", () => {
	it("runs { text } and answers OpenAI embeddings with usage estimated from characters", async () => {
		const { provider, runs } = fakeAi(() => ({
			shape: [2, 3],
			data: [
				[0.5, -0.25, 1],
				[0, 0.125, -1],
			],
		}));
		const request: EmbeddingsRequest = { model: "embed", input: ["hello world", "abc"] };
		const answer = await provider.embed?.(call(request, { model: "@cf/baai/bge-base-en-v1.5" }));

		expect(runs[0]?.model).toBe("@cf/baai/bge-base-en-v1.5");
		expect(runs[0]?.input).toEqual({ text: ["hello world", "abc"] });
		expect(answer).toEqual({
			object: "list",
			data: [
				{ object: "embedding", index: 0, embedding: [0.5, -0.25, 1] },
				{ object: "embedding", index: 1, embedding: [0, 0.125, -1] },
			],
			model: "@cf/baai/bge-base-en-v1.5",
			usage: { prompt_tokens: 4, total_tokens: 4 },
		});
	});

	it("encodes base64 as little-endian float32, as the openai client asks by default", async () => {
		const { provider, runs } = fakeAi(() => ({ shape: [1, 3], data: [[0.5, -0.25, 1]] }));
		const answer = await provider.embed?.(call({ model: "embed", input: "one", encoding_format: "base64" }));
		expect(runs[0]?.input).toEqual({ text: ["one"] });
		const encoded = answer?.data[0]?.embedding;
		expect(typeof encoded).toBe("string");
		const bytes = Uint8Array.from(atob(String(encoded)), (c) => c.charCodeAt(0));
		const view = new DataView(bytes.buffer);
		expect([0, 4, 8].map((offset) => view.getFloat32(offset, true))).toEqual([0.5, -0.25, 1]);
	});

	it("refuses token arrays and a size it cannot give as unsupported (400), and a malformed answer as protocol", async () => {
		const { provider, runs } = fakeAi(() => ({ shape: [1, 3], data: [[1, 2, 3]] }));
		const tokens = await providerError(
			provider.embed?.(call({ model: "embed", input: [1, 2, 3] })) ?? Promise.resolve(),
		);
		expect(tokens).toMatchObject({ kind: "unsupported", status: 400 });
		expect(runs).toHaveLength(0);
		const size = await providerError(
			provider.embed?.(call({ model: "embed", input: "x", dimensions: 256 })) ?? Promise.resolve(),
		);
		expect(size).toMatchObject({ kind: "unsupported", status: 400 });
		expect(size.upstreamMessage).toContain("3 dimensions");

		const broken = fakeAi(() => ({ shape: [0], data: [] }));
		const err = await providerError(broken.provider.embed?.(call({ model: "embed", input: "x" })) ?? Promise.resolve());
		expect(err.kind).toBe("protocol");
	});
});
