/** The OpenAI / OpenAI-compatible provider against a fake fetch: request shape, headers, streams, errors, embeddings. */
import { describe, expect, it } from "vitest";
import type { ProviderCall } from "../../src/llm/providers/interface";
import { openAiProvider } from "../../src/llm/providers/openai";
import type { ChatCompletion, ChatCompletionChunk, ChatRequest, EmbeddingsRequest } from "../../src/llm/types";
import { collect, json, providerError } from "../helpers/llm";

const encoder = new TextEncoder();

interface Sent {
	url: string;
	headers: Headers;
	body: Record<string, unknown>;
}

/** A fetch that records what it was sent and answers with `answer`. */
function fakeFetch(answer: (sent: Sent, init: RequestInit | undefined) => Response | Promise<Response>) {
	const sent: Sent[] = [];
	const fetchFn: typeof fetch = async (input, init) => {
		const request: Sent = {
			url: String(input),
			headers: new Headers(init?.headers),
			body: JSON.parse(String(init?.body)),
		};
		sent.push(request);
		return answer(request, init);
	};
	return { fetchFn, sent };
}

/** An SSE body cut into 7-byte pieces, so events straddle reads. */
function sse(events: string[], onCancel?: () => void): ReadableStream<Uint8Array> {
	const bytes = encoder.encode(events.map((e) => `data: ${e}\n\n`).join(""));
	let offset = 0;
	return new ReadableStream({
		pull(controller) {
			if (offset >= bytes.length) return controller.close();
			controller.enqueue(bytes.slice(offset, offset + 7));
			offset += 7;
		},
		cancel: onCancel,
	});
}
function call<R>(request: R, extra: Partial<ProviderCall<R>> = {}): ProviderCall<R> {
	return { model: "gpt-upstream", request, signal: new AbortController().signal, ...extra };
}
const REQUEST: ChatRequest = {
	model: "fast",
	messages: [{ role: "user", content: "hi" }],
	stream: false,
	stream_options: { include_usage: false },
	temperature: 0.2,
	tools: [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }],
};

const COMPLETION: ChatCompletion = {
	id: "chatcmpl-1",
	object: "chat.completion",
	created: 1,
	model: "gpt-upstream-2026-01-01",
	choices: [{ index: 0, message: { role: "assistant", content: "hello" }, finish_reason: "stop" }],
	usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
};

function chunk(delta: ChatCompletionChunk["choices"][number]["delta"], finish: string | null = null): string {
	return JSON.stringify({
		id: "c",
		object: "chat.completion.chunk",
		created: 1,
		model: "m",
		choices: [{ index: 0, delta, finish_reason: finish }],
	});
}

describe("openAiProvider chat", () => {
	it("posts the request with the upstream model, without stream fields, and passes the answer through", async () => {
		const { fetchFn, sent } = fakeFetch(() => json(COMPLETION));
		const provider = openAiProvider("openai", {
			kind: "openai",
			baseUrl: "https://api.test/v1/",
			headers: { "x-org": "acme" },
			fetch: fetchFn,
		});
		const traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01";
		const answer = await provider.chat(call(REQUEST, { apiKey: "sk-test", traceparent }));

		expect(answer).toEqual(COMPLETION);
		expect(provider.kind).toBe("openai");
		expect(sent).toHaveLength(1);
		const [request] = sent;
		expect(request?.url).toBe("https://api.test/v1/chat/completions");
		expect(request?.body).toEqual({
			model: "gpt-upstream",
			messages: REQUEST.messages,
			temperature: 0.2,
			tools: REQUEST.tools,
		});
		expect(request?.headers.get("authorization")).toBe("Bearer sk-test");
		expect(request?.headers.get("traceparent")).toBe(traceparent);
		expect(request?.headers.get("content-type")).toBe("application/json");
		expect(request?.headers.get("x-org")).toBe("acme");
	});

	it("sends no Authorization header without a key (a keyless local server)", async () => {
		const { fetchFn, sent } = fakeFetch(() => json(COMPLETION));
		const provider = openAiProvider("local", {
			kind: "openai-compatible",
			baseUrl: "http://127.0.0.1:8000/v1",
			fetch: fetchFn,
		});
		await provider.chat(call(REQUEST));
		expect(provider.kind).toBe("openai-compatible");
		expect(sent[0]?.headers.has("authorization")).toBe(false);
		expect(sent[0]?.headers.has("traceparent")).toBe(false);
	});

	it("turns 429 with Retry-After into an http error with status, delay and the upstream message", async () => {
		const { fetchFn } = fakeFetch(() =>
			json({ error: { message: "Rate limit reached", type: "rate_limit" } }, 429, { "retry-after": "7" }),
		);
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const err = await providerError(provider.chat(call(REQUEST, { apiKey: "sk-secret-key" })));
		expect(err.kind).toBe("http");
		expect(err.status).toBe(429);
		expect(err.retryAfterMs).toBe(7000);
		expect(err.upstreamMessage).toBe("Rate limit reached");
		expect(err.message).not.toContain("sk-secret-key");
	});

	it("turns a 500 into an http error", async () => {
		const { fetchFn } = fakeFetch(() => new Response("upstream exploded", { status: 500 }));
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const err = await providerError(provider.chat(call(REQUEST)));
		expect(err.kind).toBe("http");
		expect(err.status).toBe(500);
		expect(err.retryAfterMs).toBeUndefined();
	});

	it("reports an aborted call as a timeout", async () => {
		const controller = new AbortController();
		const { fetchFn } = fakeFetch(
			(_sent, init) =>
				new Promise<Response>((_resolve, reject) => {
					init?.signal?.addEventListener("abort", () => reject(init.signal?.reason));
				}),
		);
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const pending = provider.chat(call(REQUEST, { signal: controller.signal }));
		controller.abort();
		const err = await providerError(pending);
		expect(err.kind).toBe("timeout");
	});

	it("reports a failed fetch as a connection error", async () => {
		const { fetchFn } = fakeFetch(() => {
			throw new TypeError("connection refused");
		});
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const err = await providerError(provider.chat(call(REQUEST)));
		expect(err.kind).toBe("connection");
	});

	it("reports a 2xx body that is not a completion as a protocol error", async () => {
		for (const body of ["<html>hello</html>", JSON.stringify({ object: "chat.completion" })]) {
			const { fetchFn } = fakeFetch(() => new Response(body, { status: 200 }));
			const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
			const err = await providerError(provider.chat(call(REQUEST)));
			expect(err.kind).toBe("protocol");
		}
	});
});

describe("openAiProvider chatStream", () => {
	it("asks for a stream with usage and yields the chunks, tool call deltas and usage chunk in order", async () => {
		const events = [
			chunk({ role: "assistant", content: "" }),
			chunk({ content: "Let me look" }),
			chunk({
				tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "lookup", arguments: "" } }],
			}),
			chunk({ tool_calls: [{ index: 0, function: { arguments: '{"q":' } }] }),
			chunk({ tool_calls: [{ index: 0, function: { arguments: '"x"}' } }] }),
			chunk({}, "tool_calls"),
			JSON.stringify({
				id: "c",
				object: "chat.completion.chunk",
				created: 1,
				model: "m",
				choices: [],
				usage: { prompt_tokens: 5, completion_tokens: 9, total_tokens: 14 },
			}),
			"[DONE]",
		];
		const { fetchFn, sent } = fakeFetch(
			() => new Response(sse(events), { headers: { "content-type": "text/event-stream" } }),
		);
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const chunks = await collect(await provider.chatStream(call(REQUEST, { apiKey: "sk-test" })));

		expect(sent[0]?.body).toMatchObject({
			model: "gpt-upstream",
			stream: true,
			stream_options: { include_usage: true },
		});
		expect(sent[0]?.headers.get("accept")).toBe("text/event-stream");
		expect(chunks).toEqual(events.slice(0, -1).map((e) => JSON.parse(e)));
		expect(chunks.at(-1)?.usage?.total_tokens).toBe(14);
	});

	it("fails the iteration with a stream error when the stream ends without [DONE]", async () => {
		const { fetchFn } = fakeFetch(() => new Response(sse([chunk({ content: "par" })])));
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const stream = await provider.chatStream(call(REQUEST));
		const seen: ChatCompletionChunk[] = [];
		const err = await providerError(
			(async () => {
				for await (const c of stream) seen.push(c);
			})(),
		);
		expect(err.kind).toBe("stream");
		expect(seen).toHaveLength(1);
	});

	it("fails with a stream error on an error event or an event that is not a chunk", async () => {
		const cases: Array<[string, string | undefined]> = [
			[JSON.stringify({ error: { message: "overloaded mid-stream" } }), "overloaded mid-stream"],
			[JSON.stringify({ id: "c", object: "chat.completion.chunk" }), undefined],
			["not json", undefined],
		];
		for (const [event, upstreamMessage] of cases) {
			const { fetchFn } = fakeFetch(() => new Response(sse([chunk({ content: "a" }), event, "[DONE]"])));
			const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
			const err = await providerError(collect(await provider.chatStream(call(REQUEST))));
			expect(err.kind).toBe("stream");
			expect(err.upstreamMessage).toBe(upstreamMessage);
		}
	});

	it("rejects the start itself on a refusal, so the router may still fall back", async () => {
		const { fetchFn } = fakeFetch(() => json({ error: { message: "slow down" } }, 429, { "retry-after": "2" }));
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const err = await providerError(provider.chatStream(call(REQUEST)));
		expect(err.status).toBe(429);
		expect(err.retryAfterMs).toBe(2000);
	});

	it("cancels the upstream body when the consumer stops early", async () => {
		let cancelled = false;
		const events = [chunk({ content: "a" }), chunk({ content: "b" }), chunk({ content: "c" }), "[DONE]"];
		const { fetchFn } = fakeFetch(
			() =>
				new Response(
					sse(events, () => {
						cancelled = true;
					}),
				),
		);
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		for await (const c of await provider.chatStream(call(REQUEST))) {
			expect(c.choices[0]?.delta.content).toBe("a");
			break;
		}
		expect(cancelled).toBe(true);
	});
});

describe("openAiProvider embed", () => {
	it("posts to /embeddings with the upstream model and passes the answer through", async () => {
		const answer = {
			object: "list",
			data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2] }],
			model: "text-embedding-upstream",
			usage: { prompt_tokens: 2, total_tokens: 2 },
		};
		const { fetchFn, sent } = fakeFetch(() => json(answer));
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const request: EmbeddingsRequest = { model: "embed", input: ["hello"], encoding_format: "float" };
		const out = await provider.embed?.(call(request, { apiKey: "sk-test" }));
		expect(out).toEqual(answer);
		expect(sent[0]?.url).toBe("https://api.test/v1/embeddings");
		expect(sent[0]?.body).toEqual({ model: "gpt-upstream", input: ["hello"], encoding_format: "float" });
		expect(sent[0]?.headers.get("authorization")).toBe("Bearer sk-test");
	});

	it("reports an answer without a data array as a protocol error", async () => {
		const { fetchFn } = fakeFetch(() => json({ object: "list" }));
		const provider = openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: fetchFn });
		const err = await providerError(provider.embed?.(call({ model: "embed", input: "x" })) ?? Promise.resolve());
		expect(err.kind).toBe("protocol");
	});
});

describe("the output cap", () => {
	const answer = () =>
		json({
			id: "x",
			object: "chat.completion",
			created: 0,
			model: "m",
			choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
		});
	it("goes to OpenAI as max_completion_tokens and to compatible servers as max_tokens", async () => {
		const request = { model: "fast", messages: [{ role: "user" as const, content: "hi" }], max_completion_tokens: 64 };
		const openai = fakeFetch(answer);
		await openAiProvider("openai", { kind: "openai", baseUrl: "https://api.test/v1", fetch: openai.fetchFn }).chat(
			call(request),
		);
		expect(openai.sent[0]?.body).toMatchObject({ max_completion_tokens: 64 });
		expect(openai.sent[0]?.body.max_tokens).toBeUndefined();
		const local = fakeFetch(answer);
		await openAiProvider("local", {
			kind: "openai-compatible",
			baseUrl: "http://local.test/v1",
			fetch: local.fetchFn,
		}).chat(call(request));
		expect(local.sent[0]?.body).toMatchObject({ max_tokens: 64 });
		expect(local.sent[0]?.body.max_completion_tokens).toBeUndefined();
	});
});
