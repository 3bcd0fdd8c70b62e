/**
 * The Anthropic provider against a fake fetch that records each request and answers canned Messages
 * API responses: request translation, answer translation, streamed answers (text and several tool
 * calls), and how upstream failures become ProviderErrors.
 */
import { describe, expect, it } from "vitest";
import { anthropicProvider } from "../../src/llm/providers/anthropic";
import type { ChatCompletionChunk, ChatRequest } from "../../src/llm/types";
import { collect, json, providerError } from "../helpers/llm";

const BASE_URL = "https://anthropic.test";
const MODEL = "claude-sonnet-4-5";

interface Recorded {
	url: string;
	headers: Headers;
	body: Record<string, unknown>;
}

/** A provider whose fetch records each request and answers with `respond`. */
function setup(respond: (init: RequestInit | undefined) => Response | Promise<Response>) {
	const requests: Recorded[] = [];
	const fakeFetch: typeof fetch = async (input, init) => {
		requests.push({
			url: String(input),
			headers: new Headers(init?.headers),
			body: JSON.parse(String(init?.body)) as Record<string, unknown>,
		});
		return respond(init);
	};
	const provider = anthropicProvider("anthropic", {
		baseUrl: `${BASE_URL}/`,
		headers: { "anthropic-beta": "test-beta" },
		fetch: fakeFetch,
	});
	return { provider, requests };
}

function call(request: Partial<ChatRequest>, extra: { signal?: AbortSignal; traceparent?: string } = {}) {
	return {
		model: MODEL,
		request: { model: "smart", messages: [{ role: "user" as const, content: "Hi" }], ...request },
		apiKey: "sk-ant-test-key",
		signal: extra.signal ?? new AbortController().signal,
		traceparent: extra.traceparent,
	};
}
function message(overrides: Record<string, unknown> = {}) {
	return {
		id: "msg_01XFDUDYJgAACzvnptvVoYEL",
		type: "message",
		role: "assistant",
		model: "claude-sonnet-4-5-20250929",
		content: [{ type: "text", text: "Hello!" }],
		stop_reason: "end_turn",
		stop_sequence: null,
		usage: { input_tokens: 12, output_tokens: 6 },
		...overrides,
	};
}

type SseEvent = { type: string } & Record<string, unknown>;

/** An event stream as Anthropic writes it, cut into small pieces so events straddle reads. */
function sse(events: SseEvent[], onCancel?: () => void): Response {
	const text = events.map((event) => `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`).join("");
	const bytes = new TextEncoder().encode(text);
	let offset = 0;
	const body = new ReadableStream<Uint8Array>({
		pull(controller) {
			if (offset >= bytes.length) return controller.close();
			controller.enqueue(bytes.slice(offset, offset + 37));
			offset += 37;
		},
		cancel: onCancel,
	});
	return new Response(body, { headers: { "content-type": "text/event-stream" } });
}

const messageStart = (usage: Record<string, number> = { input_tokens: 25, output_tokens: 1 }): SseEvent => ({
	type: "message_start",
	message: {
		id: "msg_stream_1",
		type: "message",
		role: "assistant",
		content: [],
		model: "claude-sonnet-4-5-20250929",
		stop_reason: null,
		stop_sequence: null,
		usage,
	},
});
const textStart = (index: number): SseEvent => ({
	type: "content_block_start",
	index,
	content_block: { type: "text", text: "" },
});
const textDelta = (index: number, text: string): SseEvent => ({
	type: "content_block_delta",
	index,
	delta: { type: "text_delta", text },
});
const toolStart = (index: number, id: string, name: string): SseEvent => ({
	type: "content_block_start",
	index,
	content_block: { type: "tool_use", id, name, input: {} },
});
const jsonDelta = (index: number, partial_json: string): SseEvent => ({
	type: "content_block_delta",
	index,
	delta: { type: "input_json_delta", partial_json },
});
const blockStop = (index: number): SseEvent => ({ type: "content_block_stop", index });
const messageDelta = (stop_reason: string, output_tokens: number): SseEvent => ({
	type: "message_delta",
	delta: { stop_reason, stop_sequence: null },
	usage: { output_tokens },
});
const PING: SseEvent = { type: "ping" };
const MESSAGE_STOP: SseEvent = { type: "message_stop" };
describe("anthropic provider: request translation", () => {
	it("posts to /v1/messages with the key, version, extra headers and traceparent", async () => {
		const { provider, requests } = setup(() => json(message()));
		const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
		await provider.chat(call({}, { traceparent }));
		const [request] = requests;
		expect(request?.url).toBe(`${BASE_URL}/v1/messages`);
		expect(request?.headers.get("x-api-key")).toBe("sk-ant-test-key");
		expect(request?.headers.get("anthropic-version")).toBe("2023-06-01");
		expect(request?.headers.get("anthropic-beta")).toBe("test-beta");
		expect(request?.headers.get("content-type")).toBe("application/json");
		expect(request?.headers.get("traceparent")).toBe(traceparent);
		expect(request?.body).toEqual({
			model: MODEL,
			max_tokens: 4096,
			messages: [{ role: "user", content: [{ type: "text", text: "Hi" }] }],
		});
	});

	it("hoists system and developer messages, merges same-role turns and translates tools both ways", async () => {
		const { provider, requests } = setup(() => json(message()));
		await provider.chat(
			call({
				messages: [
					{ role: "system", content: "You are terse." },
					{ role: "user", content: "What is the weather in Paris and Oslo?" },
					{ role: "user", content: [{ type: "text", text: "Use Celsius." }] },
					{
						role: "assistant",
						content: "Checking both.",
						tool_calls: [
							{ id: "toolu_01", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
							{ id: "toolu_02", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
						],
					},
					{ role: "tool", tool_call_id: "toolu_01", content: "18°C, sunny" },
					{ role: "tool", tool_call_id: "toolu_02", content: [{ type: "text", text: "9°C, rain" }] },
					{ role: "developer", content: [{ type: "text", text: "Answer in one line." }] },
					{ role: "user", content: "And tomorrow?" },
				],
			}),
		);
		const body = requests[0]?.body;
		expect(body?.system).toBe("You are terse.\n\nAnswer in one line.");
		expect(body?.messages).toEqual([
			{
				role: "user",
				content: [
					{ type: "text", text: "What is the weather in Paris and Oslo?" },
					{ type: "text", text: "Use Celsius." },
				],
			},
			{
				role: "assistant",
				content: [
					{ type: "text", text: "Checking both." },
					{ type: "tool_use", id: "toolu_01", name: "get_weather", input: { city: "Paris" } },
					{ type: "tool_use", id: "toolu_02", name: "get_weather", input: { city: "Oslo" } },
				],
			},
			{
				role: "user",
				content: [
					{ type: "tool_result", tool_use_id: "toolu_01", content: "18°C, sunny" },
					{ type: "tool_result", tool_use_id: "toolu_02", content: [{ type: "text", text: "9°C, rain" }] },
					{ type: "text", text: "And tomorrow?" },
				],
			},
		]);
	});

	it("drops empty assistant text and sends a call without arguments as an empty object", async () => {
		const { provider, requests } = setup(() => json(message()));
		await provider.chat(
			call({
				messages: [
					{ role: "user", content: "What time is it?" },
					{
						role: "assistant",
						content: "",
						tool_calls: [{ id: "toolu_03", type: "function", function: { name: "now", arguments: "" } }],
					},
					{ role: "tool", tool_call_id: "toolu_03", content: "12:00" },
				],
			}),
		);
		expect(requests[0]?.body.messages).toEqual([
			{ role: "user", content: [{ type: "text", text: "What time is it?" }] },
			{ role: "assistant", content: [{ type: "tool_use", id: "toolu_03", name: "now", input: {} }] },
			{ role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_03", content: "12:00" }] },
		]);
	});

	it("sends data: images as base64 blocks and http(s) images as url blocks", async () => {
		const { provider, requests } = setup(() => json(message()));
		await provider.chat(
			call({
				messages: [
					{
						role: "user",
						content: [
							{ type: "text", text: "Compare these." },
							{ type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
							{ type: "image_url", image_url: { url: "https://images.test/cat.jpg", detail: "high" } },
						],
					},
				],
			}),
		);
		expect(requests[0]?.body.messages).toEqual([
			{
				role: "user",
				content: [
					{ type: "text", text: "Compare these." },
					{ type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
					{ type: "image", source: { type: "url", url: "https://images.test/cat.jpg" } },
				],
			},
		]);
	});

	it("maps sampling options: max_completion_tokens first, temperature clamped, stop and user", async () => {
		const { provider, requests } = setup(() => json(message()));
		await provider.chat(
			call({ max_tokens: 100, max_completion_tokens: 50, temperature: 1.6, top_p: 0.9, stop: "END", user: "u-42" }),
		);
		await provider.chat(call({ max_tokens: 100, temperature: 0.2, stop: ["a", "b"], seed: 7, presence_penalty: 1 }));
		expect(requests[0]?.body).toMatchObject({
			max_tokens: 50,
			temperature: 1,
			top_p: 0.9,
			stop_sequences: ["END"],
			metadata: { user_id: "u-42" },
		});
		expect(requests[1]?.body).toEqual({
			model: MODEL,
			max_tokens: 100,
			temperature: 0.2,
			stop_sequences: ["a", "b"],
			messages: [{ role: "user", content: [{ type: "text", text: "Hi" }] }],
		});
	});

	it("translates tools, with an object schema by default", async () => {
		const { provider, requests } = setup(() => json(message()));
		const parameters = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
		await provider.chat(
			call({
				tools: [
					{ type: "function", function: { name: "get_weather", description: "Weather by city", parameters } },
					{ type: "function", function: { name: "now" } },
				],
			}),
		);
		expect(requests[0]?.body.tools).toEqual([
			{ name: "get_weather", description: "Weather by city", input_schema: parameters },
			{ name: "now", input_schema: { type: "object" } },
		]);
		expect(requests[0]?.body).not.toHaveProperty("tool_choice");
	});

	it.each([
		["auto", undefined, { type: "auto" }],
		["required", undefined, { type: "any" }],
		["none", undefined, { type: "none" }],
		[{ type: "function", function: { name: "get_weather" } }, undefined, { type: "tool", name: "get_weather" }],
		["required", false, { type: "any", disable_parallel_tool_use: true }],
		[
			{ type: "function", function: { name: "get_weather" } },
			false,
			{ type: "tool", name: "get_weather", disable_parallel_tool_use: true },
		],
		[undefined, false, { type: "auto", disable_parallel_tool_use: true }],
		["none", false, { type: "none" }],
	] as const)("maps tool_choice %j with parallel_tool_calls %s", async (choice, parallel, expected) => {
		const { provider, requests } = setup(() => json(message()));
		await provider.chat(
			call({
				tools: [{ type: "function", function: { name: "get_weather" } }],
				tool_choice: choice,
				parallel_tool_calls: parallel,
			}),
		);
		expect(requests[0]?.body.tool_choice).toEqual(expected);
	});

	it("sends no tool_choice when there are no tools", async () => {
		const { provider, requests } = setup(() => json(message()));
		await provider.chat(call({ tool_choice: "required" }));
		expect(requests[0]?.body).not.toHaveProperty("tool_choice");
		expect(requests[0]?.body).not.toHaveProperty("tools");
	});

	it("turns response_format into a system instruction asking for JSON (with the schema when given)", async () => {
		const { provider, requests } = setup(() => json(message()));
		const schema = { type: "object", properties: { answer: { type: "string" } } };
		await provider.chat(
			call({
				messages: [
					{ role: "system", content: "Be helpful." },
					{ role: "user", content: "Hi" },
				],
				response_format: { type: "json_schema", json_schema: { name: "reply", schema } },
			}),
		);
		await provider.chat(call({ response_format: { type: "json_object" } }));
		await provider.chat(call({ response_format: { type: "text" } }));
		const [withSchema, jsonObject, text] = requests.map((request) => request.body.system);
		expect(withSchema).toMatch(/^Be helpful\.\n\nAnswer with a single JSON object/);
		expect(withSchema).toContain(JSON.stringify(schema));
		expect(jsonObject).toMatch(/^Answer with a single JSON object/);
		expect(jsonObject).not.toContain("Schema");
		expect(text).toBeUndefined();
	});

	it.each([
		["unparsable tool arguments", '{"city":', "https://images.test/a.png"],
		["tool arguments that are not an object", "[1,2]", "https://images.test/a.png"],
		// Parsed, they would be too deep for the JSON.stringify of the upstream request (a RangeError, a 500).
		["tool arguments nested 6,000 deep", `${'{"a":'.repeat(6000)}1${"}".repeat(6000)}`, "https://images.test/a.png"],
		["an image URL of another scheme", "{}", "ftp://images.test/a.png"],
		["a data: URL that is not base64", "{}", "data:image/png,rawbytes"],
		["a data: URL that is not an image", "{}", "data:text/plain;base64,aGk="],
	])("refuses %s as unsupported (400) without calling upstream", async (_, args, url) => {
		const { provider, requests } = setup(() => json(message()));
		const error = await providerError(
			provider.chat(
				call({
					messages: [
						{ role: "user", content: [{ type: "image_url", image_url: { url } }] },
						{
							role: "assistant",
							tool_calls: [{ id: "t1", type: "function", function: { name: "f", arguments: args } }],
						},
						{ role: "tool", tool_call_id: "t1", content: "ok" },
					],
				}),
			),
		);
		expect(error.kind).toBe("unsupported");
		expect(error.status).toBe(400);
		expect(error.upstreamMessage).toBeTruthy();
		expect(requests).toHaveLength(0);
	});
});

describe("anthropic provider: answers", () => {
	it("translates text and tool use blocks, the stop reason and usage with cache tokens", async () => {
		const { provider } = setup(() =>
			json(
				message({
					content: [
						{ type: "thinking", thinking: "Let me check.", signature: "sig" },
						{ type: "text", text: "Checking " },
						{ type: "text", text: "both." },
						{ type: "tool_use", id: "toolu_01A", name: "get_weather", input: { city: "Paris" } },
						{ type: "tool_use", id: "toolu_01B", name: "get_weather", input: { city: "Oslo" } },
					],
					stop_reason: "tool_use",
					usage: { input_tokens: 100, output_tokens: 40, cache_creation_input_tokens: 20, cache_read_input_tokens: 5 },
				}),
			),
		);
		const completion = await provider.chat(call({}));
		expect(completion).toMatchObject({
			id: "msg_01XFDUDYJgAACzvnptvVoYEL",
			object: "chat.completion",
			model: "claude-sonnet-4-5-20250929",
			choices: [
				{
					index: 0,
					message: {
						role: "assistant",
						content: "Checking both.",
						tool_calls: [
							{ id: "toolu_01A", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
							{ id: "toolu_01B", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
						],
					},
					finish_reason: "tool_calls",
				},
			],
			usage: { prompt_tokens: 125, completion_tokens: 40, total_tokens: 165 },
		});
		expect(Math.abs(completion.created - Date.now() / 1000)).toBeLessThan(60);
	});

	it("answers null content and no tool_calls when there is neither text nor tool use", async () => {
		const { provider } = setup(() => json(message({ content: [] })));
		const completion = await provider.chat(call({}));
		expect(completion.choices[0]?.message).toEqual({ role: "assistant", content: null });
	});

	it.each([
		["end_turn", "stop"],
		["stop_sequence", "stop"],
		["max_tokens", "length"],
		["tool_use", "tool_calls"],
		["refusal", "content_filter"],
	])("maps stop_reason %s to finish_reason %s", async (stopReason, expected) => {
		const { provider } = setup(() => json(message({ stop_reason: stopReason })));
		const completion = await provider.chat(call({}));
		expect(completion.choices[0]?.finish_reason).toBe(expected);
	});

	it("fails with a protocol error on a 2xx body it cannot read", async () => {
		const notJson = setup(() => new Response("<html>gateway</html>", { status: 200 }));
		expect((await providerError(notJson.provider.chat(call({})))).kind).toBe("protocol");
		const wrongShape = setup(() => json({ completion: "hi" }));
		expect((await providerError(wrongShape.provider.chat(call({})))).kind).toBe("protocol");
	});
});

describe("anthropic provider: streams", () => {
	it("streams text as OpenAI chunks: role, content deltas, finish reason, then usage", async () => {
		const { provider, requests } = setup(() =>
			sse([
				messageStart(),
				textStart(0),
				PING,
				textDelta(0, "Hello"),
				textDelta(0, ", world"),
				blockStop(0),
				messageDelta("end_turn", 15),
				MESSAGE_STOP,
			]),
		);
		const chunks = await collect(await provider.chatStream(call({ stream: false })));
		expect(requests[0]?.body.stream).toBe(true);
		for (const chunk of chunks) {
			expect(chunk).toMatchObject({
				id: "msg_stream_1",
				object: "chat.completion.chunk",
				model: "claude-sonnet-4-5-20250929",
			});
		}
		expect(chunks.map((chunk) => chunk.choices)).toEqual([
			[{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null, logprobs: null }],
			[{ index: 0, delta: { content: "Hello" }, finish_reason: null, logprobs: null }],
			[{ index: 0, delta: { content: ", world" }, finish_reason: null, logprobs: null }],
			[{ index: 0, delta: {}, finish_reason: "stop", logprobs: null }],
			[],
		]);
		expect(chunks.at(-1)?.usage).toEqual({ prompt_tokens: 25, completion_tokens: 15, total_tokens: 40 });
	});

	it("streams two tool calls with arguments split across deltas, each at its own index", async () => {
		const { provider } = setup(() =>
			sse([
				messageStart({ input_tokens: 472, output_tokens: 2, cache_read_input_tokens: 28 }),
				textStart(0),
				textDelta(0, "Checking both cities."),
				blockStop(0),
				toolStart(1, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
				jsonDelta(1, ""),
				jsonDelta(1, '{"city": "Pa'),
				jsonDelta(1, 'ris", "unit"'),
				jsonDelta(1, ': "celsius"}'),
				blockStop(1),
				toolStart(2, "toolu_01Y9dR2xVQbYp3yA8zJbQmP1", "get_weather"),
				jsonDelta(2, '{"ci'),
				jsonDelta(2, 'ty": "Oslo"}'),
				blockStop(2),
				messageDelta("tool_use", 89),
				MESSAGE_STOP,
			]),
		);
		const chunks = await collect(await provider.chatStream(call({})));
		const calls = new Map<number, { id?: string; name?: string; arguments: string }>();
		for (const chunk of chunks) {
			for (const delta of chunk.choices[0]?.delta.tool_calls ?? []) {
				const entry = calls.get(delta.index) ?? { arguments: "" };
				if (delta.id) entry.id = delta.id;
				if (delta.function?.name) entry.name = delta.function.name;
				entry.arguments += delta.function?.arguments ?? "";
				calls.set(delta.index, entry);
			}
		}
		expect([...calls.entries()]).toEqual([
			[
				0,
				{
					id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
					name: "get_weather",
					arguments: '{"city": "Paris", "unit": "celsius"}',
				},
			],
			[1, { id: "toolu_01Y9dR2xVQbYp3yA8zJbQmP1", name: "get_weather", arguments: '{"city": "Oslo"}' }],
		]);
		const starts = chunks.flatMap((chunk) => chunk.choices[0]?.delta.tool_calls?.filter((delta) => delta.id) ?? []);
		expect(starts).toEqual([
			{
				index: 0,
				id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
				type: "function",
				function: { name: "get_weather", arguments: "" },
			},
			{
				index: 1,
				id: "toolu_01Y9dR2xVQbYp3yA8zJbQmP1",
				type: "function",
				function: { name: "get_weather", arguments: "" },
			},
		]);
		expect(chunks.map((chunk) => chunk.choices[0]?.delta.content).filter(Boolean)).toEqual(["Checking both cities."]);
		expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe("tool_calls");
		expect(chunks.at(-1)?.usage).toEqual({ prompt_tokens: 500, completion_tokens: 89, total_tokens: 589 });
	});

	it("sends {} as the arguments of a streamed tool call that has none", async () => {
		const { provider } = setup(() =>
			sse([messageStart(), toolStart(0, "toolu_now", "now"), blockStop(0), messageDelta("tool_use", 10), MESSAGE_STOP]),
		);
		const chunks = await collect(await provider.chatStream(call({})));
		const args = chunks.flatMap((chunk) => chunk.choices[0]?.delta.tool_calls?.map((d) => d.function?.arguments) ?? []);
		expect(args.join("")).toBe("{}");
	});

	it("fails the iterator with a stream error on an error event mid-stream", async () => {
		const { provider } = setup(() =>
			sse([
				messageStart(),
				textStart(0),
				textDelta(0, "Hel"),
				{ type: "error", error: { type: "overloaded_error", message: "Overloaded" } },
			]),
		);
		const stream = await provider.chatStream(call({}));
		const seen: ChatCompletionChunk[] = [];
		const error = await providerError(
			(async () => {
				for await (const chunk of stream) seen.push(chunk);
			})(),
		);
		expect(seen.map((chunk) => chunk.choices[0]?.delta.content)).toEqual(["", "Hel"]);
		expect(error.kind).toBe("stream");
		expect(error.upstreamMessage).toBe("Overloaded");
	});

	it("fails the iterator with a stream error when the stream ends before message_stop", async () => {
		const { provider } = setup(() => sse([messageStart(), textStart(0), textDelta(0, "Hel")]));
		const stream = await provider.chatStream(call({}));
		expect((await providerError(collect(stream))).kind).toBe("stream");
	});

	it("fails the iterator with a stream error on an event that is not JSON", async () => {
		const { provider } = setup(
			() =>
				new Response(
					`event: message_start\ndata: ${JSON.stringify(messageStart())}\n\nevent: content_block_delta\ndata: {"type":\n\n`,
					{ headers: { "content-type": "text/event-stream" } },
				),
		);
		const stream = await provider.chatStream(call({}));
		expect((await providerError(collect(stream))).kind).toBe("stream");
	});

	it("cancels the upstream body when the consumer stops early", async () => {
		let cancelled!: () => void;
		const cancel = new Promise<void>((resolve) => {
			cancelled = resolve;
		});
		const { provider } = setup(() =>
			sse([messageStart(), textStart(0), textDelta(0, "one"), textDelta(0, "two"), blockStop(0), MESSAGE_STOP], () =>
				cancelled(),
			),
		);
		const stream = await provider.chatStream(call({}));
		for await (const chunk of stream) {
			if (chunk.choices[0]?.delta.content === "one") break;
		}
		await cancel;
	});
});

describe("anthropic provider: failures", () => {
	const rateLimited = () =>
		json(
			{
				type: "error",
				error: { type: "rate_limit_error", message: "Number of requests has exceeded your rate limit" },
			},
			429,
			{ "retry-after": "7" },
		);

	it("rejects chat and chatStream on 429 with the status, Retry-After and upstream message", async () => {
		const { provider } = setup(rateLimited);
		for (const action of [() => provider.chat(call({})), () => provider.chatStream(call({}))]) {
			const error = await providerError(action());
			expect(error).toMatchObject({
				kind: "http",
				status: 429,
				retryAfterMs: 7000,
				upstreamMessage: "Number of requests has exceeded your rate limit",
			});
		}
	});

	it("rejects on 500 as an http error", async () => {
		const { provider } = setup(() => json({ type: "error", error: { type: "api_error", message: "Internal" } }, 500));
		const error = await providerError(provider.chatStream(call({})));
		expect(error.kind).toBe("http");
		expect(error.status).toBe(500);
	});

	it("rejects with a timeout when the call's signal fires before an answer", async () => {
		const controller = new AbortController();
		const { provider } = setup(
			(init) =>
				new Promise<Response>((_, reject) => {
					init?.signal?.addEventListener("abort", () => reject(init.signal?.reason));
					controller.abort(new DOMException("attempt timed out", "TimeoutError"));
				}),
		);
		const error = await providerError(provider.chatStream(call({}, { signal: controller.signal })));
		expect(error.kind).toBe("timeout");
	});

	it("rejects with a connection error when fetch fails without the signal firing", async () => {
		const { provider } = setup(() => Promise.reject(new TypeError("Network connection lost.")));
		const error = await providerError(provider.chat(call({})));
		expect(error.kind).toBe("connection");
		expect(error.message).not.toContain("sk-ant-test-key");
	});
});
