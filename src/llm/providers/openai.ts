/**
 * The OpenAI provider, which also serves every OpenAI-compatible server (vLLM, local inference
 * servers, hosted compatible APIs): the plane's wire format is OpenAI's, so requests go out as they
 * came in (with the upstream model id) and answers come back as they are, after a light shape check.
 * Streams always ask for usage so tokens can be counted; the router drops that chunk when the client
 * did not ask for it.
 */

import { errorMessage, isRecord } from "../../lib";
import { readSse } from "../sse";
import type { ChatCompletion, ChatCompletionChunk, ChatRequest, EmbeddingsRequest, EmbeddingsResponse } from "../types";
import { fetchError, httpError, type Provider, type ProviderCall, ProviderError } from "./interface";

export interface OpenAiProviderOptions {
	kind: "openai" | "openai-compatible";
	/** API root, e.g. `https://api.openai.com/v1`; a trailing slash is ignored. */
	baseUrl: string;
	/** Extra request headers from config (never secrets). */
	headers?: Record<string, string>;
	/** Injected in tests; the global fetch otherwise. */
	fetch?: typeof fetch;
}

/** An OpenAI (or OpenAI-compatible) provider named `name`. */
export function openAiProvider(name: string, options: OpenAiProviderOptions): Provider {
	const baseUrl = options.baseUrl.replace(/\/+$/, "");
	const doFetch = options.fetch ?? ((input: RequestInfo | URL, init?: RequestInit) => fetch(input, init));

	async function post(path: string, body: unknown, call: ProviderCall<unknown>, stream: boolean): Promise<Response> {
		const headers: Record<string, string> = {
			...options.headers,
			"content-type": "application/json",
			accept: stream ? "text/event-stream" : "application/json",
		};
		if (call.apiKey) headers.authorization = `Bearer ${call.apiKey}`;
		if (call.traceparent) headers.traceparent = call.traceparent;
		let response: Response;
		try {
			response = await doFetch(`${baseUrl}${path}`, {
				method: "POST",
				headers,
				body: JSON.stringify(body),
				signal: call.signal,
			});
		} catch (err) {
			throw fetchError(err, call.signal, name);
		}
		if (!response.ok) throw await httpError(response, name);
		call.onResponse?.();
		return response;
	}

	/** The 2xx body as JSON with `key` holding an array; anything else is a protocol error (or a timeout mid-body). */
	async function readJson(response: Response, key: string, signal: AbortSignal): Promise<Record<string, unknown>> {
		let body: unknown;
		try {
			body = await response.json();
		} catch (err) {
			if (signal.aborted) throw fetchError(err, signal, name);
			throw new ProviderError("protocol", `${name} answered ${response.status} with a body that is not JSON`);
		}
		if (!isRecord(body) || !Array.isArray(body[key])) {
			throw new ProviderError("protocol", `${name} answered ${response.status} without a ${key} array`);
		}
		return body;
	}

	/**
	 * The output cap in the field the server knows: OpenAI's own models all take `max_completion_tokens`
	 * (its reasoning models refuse `max_tokens`); OpenAI-compatible servers are sent `max_tokens`, which
	 * every one of them knows.
	 */
	function forServer(request: ChatRequest): ChatRequest {
		if (options.kind === "openai" || request.max_completion_tokens == null || request.max_tokens != null)
			return request;
		const { max_completion_tokens, ...rest } = request;
		return { ...rest, max_tokens: max_completion_tokens };
	}

	return {
		name,
		kind: options.kind,

		async chat(call) {
			const { stream: _stream, stream_options: _options, ...rest } = forServer(call.request);
			const response = await post("/chat/completions", { ...rest, model: call.model }, call, false);
			const body = await readJson(response, "choices", call.signal);
			// Every choice must carry a message: the plane reads it (guardrails, usage estimates, cache).
			if (!(body.choices as unknown[]).every((c) => isRecord(c) && isRecord(c.message))) {
				throw new ProviderError("protocol", `${name} answered a choice without a message`);
			}
			return body as unknown as ChatCompletion;
		},

		async chatStream(call) {
			const body: ChatRequest = {
				...forServer(call.request),
				model: call.model,
				stream: true,
				stream_options: { include_usage: true },
			};
			const response = await post("/chat/completions", body, call, true);
			if (!response.body) throw new ProviderError("protocol", `${name} answered a stream request without a body`);
			return openAiChunks(response.body, name);
		},

		async embed(call: ProviderCall<EmbeddingsRequest>) {
			const response = await post("/embeddings", { ...call.request, model: call.model }, call, false);
			return (await readJson(response, "data", call.signal)) as unknown as EmbeddingsResponse;
		},
	};
}

/**
 * OpenAI chunks from an SSE body: `[DONE]` ends the stream; an `{error}` event, an event that is not
 * a chunk, a read failure or an end without `[DONE]` is a `stream` error.
 */
async function* openAiChunks(body: ReadableStream<Uint8Array>, provider: string): AsyncGenerator<ChatCompletionChunk> {
	try {
		for await (const event of readSse(body)) {
			if (event.data === "[DONE]") return;
			let data: unknown;
			try {
				data = JSON.parse(event.data);
			} catch {
				throw new ProviderError("stream", `${provider} sent an event that is not JSON`);
			}
			if (isRecord(data) && data.error !== undefined && data.error !== null) {
				const message = isRecord(data.error) ? data.error.message : data.error;
				throw new ProviderError("stream", `${provider} sent an error event`, {
					upstreamMessage: typeof message === "string" ? message.slice(0, 500) : undefined,
				});
			}
			if (!isRecord(data) || !Array.isArray(data.choices)) {
				throw new ProviderError("stream", `${provider} sent an event that is not a completion chunk`);
			}
			yield data as unknown as ChatCompletionChunk;
		}
	} catch (err) {
		if (err instanceof ProviderError) throw err;
		throw new ProviderError("stream", `${provider} stream broke off: ${errorMessage(err)}`);
	}
	throw new ProviderError("stream", `${provider} stream ended without [DONE]`);
}
