/**
 * The stub upstream LLM server (test/helpers/node/llm-stub.ts) against real clients: Node's fetch and
 * the official `openai` client. Checks each scenario in both wire formats, the recorded requests,
 * scripts, and that close() ends hung connections — so tests built on the stub rely on a stub that
 * behaves like the providers.
 */
import OpenAI from "openai";
import type { ChatCompletion, ChatCompletionChunk } from "openai/resources/chat/completions";
import type { CreateEmbeddingResponse } from "openai/resources/embeddings";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { eventually } from "../helpers/node/http.ts";
import { type LlmStub, OK_TEXT, SYSTEM_FINGERPRINT, startLlmStub } from "../helpers/node/llm-stub.ts";

const KEY = "sk-stub-test-key";
const USER_TEXT = "What is the weather in Paris and Tokyo today?";
/** Words in USER_TEXT plus the stub's fixed 10. */
const PROMPT_TOKENS = 9 + 10;
const OK_TEXT_WORDS = 7;

let stub: LlmStub;

/** Anthropic's message and stream events, as far as these tests read them. */
interface AnthropicMessage {
	id: string;
	content: Array<{ type: string; text?: string; name?: string; input?: unknown }>;
}
interface AnthropicEvent {
	type: string;
	index?: number;
	content_block?: { type: string; name?: string; input?: unknown };
	delta?: { type?: string; text?: string; partial_json?: string; stop_reason?: string };
}

async function json<T>(res: Response): Promise<T> {
	return (await res.json()) as T;
}

interface SseEvent {
	event?: string;
	data: string;
}

/** Splits an event stream the stub wrote (one `event:` and one `data:` line per event at most). */
function parseSse(text: string): SseEvent[] {
	return text
		.split("\n\n")
		.filter((block) => block.trim() !== "")
		.map((block) => {
			const lines = block.split("\n");
			const event = lines.find((l) => l.startsWith("event: "))?.slice("event: ".length);
			const data = lines.find((l) => l.startsWith("data: "))?.slice("data: ".length) ?? "";
			return event === undefined ? { data } : { event, data };
		});
}

async function openai(body: Record<string, unknown>, path = "/openai/v1/chat/completions"): Promise<Response> {
	return fetch(stub.url + path, {
		method: "POST",
		headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
		body: JSON.stringify({ messages: [{ role: "user", content: USER_TEXT }], ...body }),
	});
}

async function anthropic(body: Record<string, unknown>, headers: Record<string, string> = { "x-api-key": KEY }) {
	return fetch(`${stub.anthropicBaseUrl}/v1/messages`, {
		method: "POST",
		headers: { "content-type": "application/json", "anthropic-version": "2023-06-01", ...headers },
		body: JSON.stringify({ max_tokens: 256, messages: [{ role: "user", content: USER_TEXT }], ...body }),
	});
}

interface StreamedToolCall {
	id: string;
	name: string;
	arguments: string;
	pieces: number;
}

/** Reassembles OpenAI stream chunks into text, tool calls, finish reason and usage. */
function assembleOpenAi(events: SseEvent[]) {
	expect(events.at(-1)?.data).toBe("[DONE]");
	const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as ChatCompletionChunk);
	let text = "";
	let finish: string | null = null;
	const tools: StreamedToolCall[] = [];
	for (const chunk of chunks) {
		expect(chunk).toMatchObject({ object: "chat.completion.chunk", system_fingerprint: SYSTEM_FINGERPRINT });
		expect(chunk.id).toBe(chunks[0]?.id);
		const choice = chunk.choices[0];
		if (!choice) continue;
		text += choice.delta.content ?? "";
		finish = choice.finish_reason ?? finish;
		for (const call of choice.delta.tool_calls ?? []) {
			if (call.id) tools[call.index] = { id: call.id, name: call.function?.name ?? "", arguments: "", pieces: 0 };
			const tool = tools[call.index];
			if (!tool) throw new Error(`tool call ${call.index} continued before it started`);
			if (call.function?.arguments) {
				tool.arguments += call.function.arguments;
				tool.pieces++;
			}
		}
	}
	return { chunks, text, finish, tools, usage: chunks.at(-1)?.usage };
}

beforeAll(async () => {
	stub = await startLlmStub();
});

afterAll(async () => {
	await stub.close();
});

beforeEach(() => {
	stub.reset();
});

describe("OpenAI format", () => {
	it("answers a chat completion with realistic fields and deterministic usage, recording the key", async () => {
		const res = await openai({ model: "ok" });
		expect(res.status).toBe(200);
		expect(res.headers.get("x-request-id")).toMatch(/^req_/);
		const body = await json<ChatCompletion>(res);
		expect(body).toMatchObject({
			object: "chat.completion",
			model: "ok",
			system_fingerprint: SYSTEM_FINGERPRINT,
			choices: [{ index: 0, message: { role: "assistant", content: OK_TEXT }, finish_reason: "stop" }],
			usage: {
				prompt_tokens: PROMPT_TOKENS,
				completion_tokens: OK_TEXT_WORDS,
				total_tokens: PROMPT_TOKENS + OK_TEXT_WORDS,
			},
		});
		expect(body.id).toMatch(/^chatcmpl-/);
		expect(Number.isInteger(body.created)).toBe(true);
		expect(stub.requests).toHaveLength(1);
		expect(stub.requests[0]).toMatchObject({
			method: "POST",
			path: "/openai/v1/chat/completions",
			apiKey: KEY,
			scenario: "ok",
			body: { model: "ok" },
		});
		expect(stub.requests[0]?.headers.authorization).toBe(`Bearer ${KEY}`);
	});

	it("echoes the last user message, and answers JSON text for the json model", async () => {
		const echo = await json<ChatCompletion>(await openai({ model: "echo" }));
		expect(echo.choices[0]?.message.content).toBe(USER_TEXT);
		const answer = await json<ChatCompletion>(
			await openai({ model: "json", response_format: { type: "json_object" } }),
		);
		expect(JSON.parse(answer.choices[0]?.message.content ?? "")).toEqual({ answer: "ok", items: [1, 2, 3] });
	});

	it("streams role, content and finish chunks, a usage chunk when asked for, then [DONE]", async () => {
		const res = await openai({ model: "ok", stream: true, stream_options: { include_usage: true } });
		expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
		const { chunks, text, finish, usage } = assembleOpenAi(parseSse(await res.text()));
		expect(chunks[0]?.choices[0]?.delta).toMatchObject({ role: "assistant", content: "" });
		expect(text).toBe(OK_TEXT);
		expect(finish).toBe("stop");
		expect(chunks.at(-1)?.choices).toEqual([]);
		expect(usage).toMatchObject({ prompt_tokens: PROMPT_TOKENS, completion_tokens: OK_TEXT_WORDS });

		const plain = assembleOpenAi(parseSse(await (await openai({ model: "ok", stream: true })).text()));
		expect(plain.chunks.every((c) => !("usage" in c))).toBe(true);
	});

	it("answers two tool calls, whole and streamed with arguments over several chunks", async () => {
		const tools = [{ type: "function", function: { name: "weather", parameters: { type: "object" } } }];
		const whole = await json<ChatCompletion>(await openai({ model: "tools", tools }));
		expect(whole.choices[0]).toMatchObject({ finish_reason: "tool_calls", message: { content: null } });
		const calls = (whole.choices[0]?.message.tool_calls ?? []).map((c) => (c.type === "function" ? c.function : null));
		expect(calls.map((c) => c?.name)).toEqual(["weather", "weather"]);
		expect(JSON.parse(calls[1]?.arguments ?? "")).toEqual({ city: "Tokyo", unit: "celsius" });

		const streamed = assembleOpenAi(parseSse(await (await openai({ model: "tools", tools, stream: true })).text()));
		expect(streamed.finish).toBe("tool_calls");
		expect(streamed.tools).toHaveLength(2);
		for (const call of streamed.tools) {
			expect(call.id).toMatch(/^call_/);
			expect(call.pieces).toBeGreaterThan(1);
			expect(JSON.parse(call.arguments)).toHaveProperty("city");
		}
	});

	it("streams chunks:<text> a few characters per chunk", async () => {
		const text = "token sk-live-0123456789 ends";
		const { chunks, text: streamed } = assembleOpenAi(
			parseSse(await (await openai({ model: `chunks:${text}`, stream: true })).text()),
		);
		expect(streamed).toBe(text);
		const pieces = chunks.map((c) => c.choices[0]?.delta.content ?? "").filter((c) => c !== "");
		expect(pieces.length).toBeGreaterThan(5);
		expect(pieces.every((p) => p.length <= 3)).toBe(true);
	});

	it("answers 429 with Retry-After and 500, in OpenAI's error shape", async () => {
		const limited = await openai({ model: "rate-limited" });
		expect(limited.status).toBe(429);
		expect(limited.headers.get("retry-after")).toBe("1");
		expect(await limited.json()).toMatchObject({
			error: { type: "requests", code: "rate_limit_exceeded", param: null, message: expect.any(String) },
		});
		const failed = await openai({ model: "error", stream: true });
		expect(failed.status).toBe(500);
		expect(await failed.json()).toMatchObject({ error: { type: "server_error", code: null, param: null } });
	});

	it("answers 401 without a key, except under /keyless, and 400 when messages are missing", async () => {
		const unauthenticated = await fetch(`${stub.openaiBaseUrl}/chat/completions`, {
			method: "POST",
			body: JSON.stringify({ model: "ok", messages: [{ role: "user", content: "hi" }] }),
		});
		expect(unauthenticated.status).toBe(401);
		expect(await unauthenticated.json()).toMatchObject({ error: { type: "invalid_request_error" } });
		const keyless = await fetch(`${stub.keylessOpenaiBaseUrl}/chat/completions`, {
			method: "POST",
			body: JSON.stringify({ model: "ok", messages: [{ role: "user", content: "hi" }] }),
		});
		expect(keyless.status).toBe(200);
		const incomplete = await fetch(`${stub.openaiBaseUrl}/chat/completions`, {
			method: "POST",
			headers: { authorization: `Bearer ${KEY}` },
			body: JSON.stringify({ model: "ok" }),
		});
		expect(incomplete.status).toBe(400);
		expect(await incomplete.json()).toMatchObject({ error: { param: "messages" } });
		expect(stub.requests.map((r) => [r.apiKey, r.scenario])).toEqual([
			[undefined, undefined],
			[undefined, "ok"],
			[KEY, undefined],
		]);
	});

	it("plays a script one step per request, then falls back to the model's own name", async () => {
		stub.script("primary", ["error", "rate-limited"]);
		const statuses: number[] = [];
		for (let i = 0; i < 3; i++) statuses.push((await openai({ model: "primary" })).status);
		expect(statuses).toEqual([500, 429, 200]);
		expect(stub.requests.map((r) => r.scenario)).toEqual(["error", "rate-limited", "ok"]);
	});

	it("breaks a stream after its first chunks, and a plain answer after its headers", async () => {
		const res = await openai({ model: "broken-stream", stream: true });
		expect(res.status).toBe(200);
		const reader = res.body?.pipeThrough(new TextDecoderStream()).getReader();
		if (!reader) throw new Error("no body");
		let received = "";
		const read = async () => {
			for (let i = 0; i < 100; i++) {
				const next = await reader.read();
				if (next.done) return;
				received += next.value;
			}
		};
		await expect(read()).rejects.toThrow();
		expect(received).toContain('"role":"assistant"');
		expect(received).not.toContain("[DONE]");

		const plain = await openai({ model: "broken-stream" });
		expect(plain.status).toBe(200);
		await expect(plain.json()).rejects.toThrow();
	});

	it("hangs until the client gives up", async () => {
		const controller = new AbortController();
		const hung = fetch(`${stub.openaiBaseUrl}/chat/completions`, {
			method: "POST",
			headers: { authorization: `Bearer ${KEY}` },
			body: JSON.stringify({ model: "hang", messages: [{ role: "user", content: "hi" }] }),
			signal: controller.signal,
		});
		let answered = false;
		void hung.then(
			() => {
				answered = true;
			},
			() => undefined,
		);
		// The stub has read the request and chosen to hang; a later request is answered in full meanwhile, the
		// hung one still not. Only then does the client give up.
		expect(await eventually(async () => stub.requests.some((r) => r.scenario === "hang"), 5_000, 10)).toBe(true);
		const later = await openai({ model: "ok" });
		expect((await later.json()) as ChatCompletion).toMatchObject({ object: "chat.completion" });
		expect(answered).toBe(false);
		controller.abort();
		await expect(hung).rejects.toMatchObject({ name: "AbortError" });
	}, 10_000);

	it("answers slow-first-byte like ok", async () => {
		const body = await json<ChatCompletion>(await openai({ model: "slow-first-byte" }));
		expect(body.choices[0]?.message.content).toBe(OK_TEXT);
	});

	it("returns deterministic unit vectors, as floats or base64", async () => {
		const embed = async (body: Record<string, unknown>) =>
			json<CreateEmbeddingResponse>(await openai({ model: "embed", ...body }, "/openai/v1/embeddings"));
		const floats = await embed({ input: ["alpha beta", "gamma"] });
		expect(floats).toMatchObject({ object: "list", model: "embed", usage: { prompt_tokens: 3, total_tokens: 3 } });
		const [first = [], second] = floats.data.map((d) => d.embedding);
		expect(first).toHaveLength(8);
		expect(Math.hypot(...first)).toBeCloseTo(1, 6);
		expect(first).not.toEqual(second);
		expect((await embed({ input: "alpha beta" })).data[0]?.embedding).toEqual(first);

		const encoded = (await embed({ input: "alpha beta", encoding_format: "base64" })).data[0]?.embedding;
		const bytes = Buffer.from(String(encoded), "base64");
		const decoded = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
		expect(decoded).toHaveLength(8);
		for (const [i, v] of decoded.entries()) expect(v).toBeCloseTo(first[i] ?? Number.NaN, 6);
		expect((await embed({ input: "x", dimensions: 40 })).data[0]?.embedding).toHaveLength(40);
	});
});

describe("the official openai client", () => {
	it("reads completions, streams and embeddings, and raises its typed errors", async () => {
		const client = new OpenAI({ baseURL: stub.openaiBaseUrl, apiKey: KEY, maxRetries: 0 });
		const completion = await client.chat.completions.create({
			model: "ok",
			messages: [{ role: "user", content: "hi" }],
		});
		expect(completion.choices[0]?.message.content).toBe(OK_TEXT);

		const stream = await client.chat.completions.create({
			model: "tools",
			messages: [{ role: "user", content: "hi" }],
			stream: true,
		});
		let argumentChunks = 0;
		for await (const chunk of stream) argumentChunks += chunk.choices[0]?.delta.tool_calls?.length ?? 0;
		expect(argumentChunks).toBeGreaterThan(2);

		const embeddings = await client.embeddings.create({ model: "embed", input: "alpha beta" });
		expect(embeddings.data[0]?.embedding).toHaveLength(8);

		await expect(
			client.chat.completions.create({ model: "rate-limited", messages: [{ role: "user", content: "hi" }] }),
		).rejects.toBeInstanceOf(OpenAI.RateLimitError);
		// The client insists on a key: drop its Authorization header to send none.
		const unkeyed = new OpenAI({
			baseURL: stub.openaiBaseUrl,
			apiKey: KEY,
			maxRetries: 0,
			defaultHeaders: { authorization: null },
		});
		await expect(
			unkeyed.chat.completions.create({ model: "ok", messages: [{ role: "user", content: "hi" }] }),
		).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
	});
});

describe("Anthropic format", () => {
	it("answers a message with content blocks, stop reason and usage", async () => {
		const res = await anthropic({ model: "claude-stub", system: "Be brief." });
		expect(res.status).toBe(200);
		expect(res.headers.get("request-id")).toMatch(/^req_/);
		const body = await json<AnthropicMessage>(res);
		expect(body).toMatchObject({
			type: "message",
			role: "assistant",
			model: "claude-stub",
			content: [{ type: "text", text: OK_TEXT }],
			stop_reason: "end_turn",
			stop_sequence: null,
			usage: { input_tokens: PROMPT_TOKENS + 2, output_tokens: OK_TEXT_WORDS },
		});
		expect(body.id).toMatch(/^msg_/);
		expect(stub.requests[0]).toMatchObject({ path: "/anthropic/v1/messages", apiKey: KEY, scenario: "ok" });
	});

	it("streams the real event sequence", async () => {
		const res = await anthropic({ model: "ok", stream: true });
		expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
		const events = parseSse(await res.text());
		const data = events.map((e) => JSON.parse(e.data) as AnthropicEvent);
		expect(data.map((d) => d.type)).toEqual(events.map((e) => e.event));
		const names = events.map((e) => e.event);
		const deltas = names.filter((n) => n === "content_block_delta").length;
		expect(deltas).toBeGreaterThan(1);
		expect(names).toEqual([
			"message_start",
			"content_block_start",
			"ping",
			...Array(deltas).fill("content_block_delta"),
			"content_block_stop",
			"message_delta",
			"message_stop",
		]);
		const text = data
			.filter((d) => d.type === "content_block_delta")
			.map((d) => d.delta?.text)
			.join("");
		expect(text).toBe(OK_TEXT);
		expect(data.at(-2)).toMatchObject({
			delta: { stop_reason: "end_turn" },
			usage: { output_tokens: OK_TEXT_WORDS },
		});
	});

	it("streams a text block and two tool_use blocks with input_json_delta", async () => {
		const tools = [{ name: "weather", input_schema: { type: "object" } }];
		const events = parseSse(await (await anthropic({ model: "tools", tools, stream: true })).text());
		const data = events.map((e) => JSON.parse(e.data) as AnthropicEvent);
		const starts = data.filter((d) => d.type === "content_block_start");
		expect(starts.map((s) => [s.index, s.content_block?.type])).toEqual([
			[0, "text"],
			[1, "tool_use"],
			[2, "tool_use"],
		]);
		expect(starts[1]?.content_block).toMatchObject({ name: "weather", input: {} });
		for (const index of [1, 2]) {
			const partials = data
				.filter((d) => d.type === "content_block_delta" && d.index === index)
				.map((d) => {
					expect(d.delta?.type).toBe("input_json_delta");
					return d.delta?.partial_json;
				});
			expect(partials.length).toBeGreaterThan(2);
			expect(JSON.parse(partials.join(""))).toHaveProperty("unit", "celsius");
		}
		expect(data.find((d) => d.type === "message_delta")?.delta?.stop_reason).toBe("tool_use");

		const whole = await json<AnthropicMessage>(await anthropic({ model: "tools", tools }));
		expect(whole.content.map((b) => b.type)).toEqual(["text", "tool_use", "tool_use"]);
		expect(whole.content[2]?.input).toEqual({ city: "Tokyo", unit: "celsius" });
	});

	it("answers errors in Anthropic's shape: 401, 400, 429 with Retry-After, 500", async () => {
		const cases: Array<[Response, number, string]> = [
			[await anthropic({ model: "ok" }, {}), 401, "authentication_error"],
			[await anthropic({ model: "ok", max_tokens: undefined }), 400, "invalid_request_error"],
			[await anthropic({ model: "rate-limited" }), 429, "rate_limit_error"],
			[await anthropic({ model: "error", stream: true }), 500, "api_error"],
		];
		for (const [res, status, type] of cases) {
			expect(res.status).toBe(status);
			expect(await res.json()).toMatchObject({ type: "error", error: { type, message: expect.any(String) } });
		}
		expect(cases[2]?.[0].headers.get("retry-after")).toBe("1");
	});

	it("breaks a stream after the first text deltas", async () => {
		const res = await anthropic({ model: "broken-stream", stream: true });
		expect(res.status).toBe(200);
		await expect(res.text()).rejects.toThrow();
	});
});

describe("options", () => {
	it("records nothing when record is false", async () => {
		const quiet = await startLlmStub({ record: false });
		try {
			const res = await fetch(`${quiet.openaiBaseUrl}/chat/completions`, {
				method: "POST",
				headers: { authorization: `Bearer ${KEY}` },
				body: JSON.stringify({ model: "ok", messages: [{ role: "user", content: "hi" }] }),
			});
			expect(res.status).toBe(200);
			expect(quiet.requests).toEqual([]);
		} finally {
			await quiet.close();
		}
	});
});

describe("close", () => {
	it("ends hung connections and resolves", async () => {
		const own = await startLlmStub();
		const hung = fetch(`${own.openaiBaseUrl}/chat/completions`, {
			method: "POST",
			headers: { authorization: `Bearer ${KEY}` },
			body: JSON.stringify({ model: "hang", messages: [{ role: "user", content: "hi" }] }),
		});
		expect(await eventually(async () => own.requests.length === 1, 5_000, 10)).toBe(true);
		await own.close();
		await expect(hung).rejects.toThrow();
		await expect(fetch(own.url)).rejects.toThrow();
	}, 10_000);
});
