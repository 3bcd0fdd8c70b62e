/**
 * The Workers AI provider: OpenAI requests in, the `AI` binding's text-generation and embedding
 * models in the middle, OpenAI answers out (plain, streamed and with tool calls). The binding is
 * remote-only, so where it is not bound (locally) every call fails as a `connection` error and the
 * router treats the provider as absent.
 *
 * Workers AI answers in two dialects, both handled here: the native one (`{response, tool_calls,
 * usage}`, tool calls as `{name, arguments: object}` or `{id, function: {name, arguments}}`) and,
 * for newer models, OpenAI's own (`{choices: [{message}]}`, streamed as `{choices: [{delta}]}`).
 * The translation is kept in this file rather than taken from `@cloudflare/ai-utils`, whose second
 * copy of zod would weigh more than the few mappings below.
 */
import { errorMessage, isRecord, randomHex, toBase64, untilAborted } from "../../lib";
import { readSse } from "../sse";
import type {
	ChatCompletion,
	ChatCompletionChunk,
	ChatMessage,
	ChatRequest,
	EmbeddingsResponse,
	FinishReason,
	ToolCall,
	Usage,
} from "../types";
import { type Provider, type ProviderCall, ProviderError } from "./interface";

/** The part of the `AI` binding this provider uses (the generated `Ai` type satisfies it). */
export interface AiBinding {
	run(model: string, input: Record<string, unknown>, options?: { signal?: AbortSignal }): Promise<unknown>;
}

export interface WorkersAiProviderOptions {
	/** The binding, read on every call; undefined where it is not bound. */
	ai: () => AiBinding | undefined;
}

/** A Workers AI provider named `name`. */
export function workersAiProvider(name: string, options: WorkersAiProviderOptions): Provider {
	async function run(call: ProviderCall<unknown>, input: Record<string, unknown>): Promise<unknown> {
		const ai = options.ai();
		if (!ai) throw new ProviderError("connection", "Workers AI is not bound here");
		try {
			return await untilAborted(ai.run(call.model, input, { signal: call.signal }), call.signal);
		} catch (err) {
			throw runError(err, call.signal, name);
		}
	}

	return {
		name,
		kind: "workers-ai",

		async chat(call) {
			const output = await run(call, toWorkersAiInput(call.request, false));
			return completion(call.model, readAnswer(output, name));
		},

		async chatStream(call) {
			const output = await run(call, toWorkersAiInput(call.request, true));
			if (output instanceof ReadableStream) return translateStream(output, call.model, name);
			// Some models answer a stream request with a whole answer: replay it as chunks.
			return answerChunks(readAnswer(output, name), call.model);
		},

		async embed(call) {
			const { input, encoding_format: encoding, dimensions } = call.request;
			const texts = typeof input === "string" ? [input] : input;
			if (!isStringArray(texts)) {
				throw new ProviderError("unsupported", `${name} embeds text only`, {
					status: 400,
					upstreamMessage: "Workers AI embeds text, not token arrays",
				});
			}
			const output = await run(call, { text: texts });
			if (!isRecord(output) || !Array.isArray(output.data) || output.data.length !== texts.length) {
				throw new ProviderError("protocol", `${name} answered embeddings without one vector per input`);
			}
			const rows = output.data;
			if (!rows.every((row): row is number[] => Array.isArray(row))) {
				throw new ProviderError("protocol", `${name} answered embeddings that are not vectors`);
			}
			if (dimensions !== undefined && rows.some((row) => row.length !== dimensions)) {
				throw new ProviderError("unsupported", `${name} cannot change the embedding size`, {
					status: 400,
					upstreamMessage: `${call.model} returns ${rows[0]?.length} dimensions, not ${dimensions}`,
				});
			}
			const tokens =
				readUsage(output.usage)?.prompt_tokens ?? Math.ceil(texts.reduce((sum, text) => sum + text.length, 0) / 4);
			const response: EmbeddingsResponse = {
				object: "list",
				data: rows.map((row, index) => ({
					object: "embedding",
					index,
					embedding: encoding === "base64" ? base64Floats(row) : row,
				})),
				model: call.model,
				usage: { prompt_tokens: tokens, total_tokens: tokens },
			};
			return response;
		},
	};
}

// ---- Requests --------------------------------------------------------------------------------

function text(content: string | Array<{ type: string; text?: string }>): string {
	return typeof content === "string" ? content : content.map((part) => part.text ?? "").join("\n");
}

/**
 * OpenAI messages as Workers AI takes them: content as a string (text parts joined; a user message
 * with images keeps its parts, which the vision models read), `developer` as `system`, and tool
 * results carrying the tool's name as well as its call id (older models match on the name).
 */
function toWorkersAiMessages(messages: ChatMessage[]): Array<Record<string, unknown>> {
	const toolNames = new Map<string, string>();
	return messages.map((message) => {
		switch (message.role) {
			case "system":
			case "developer":
				return { role: "system", content: text(message.content) };
			case "user": {
				const { content } = message;
				const textOnly = typeof content === "string" || content.every((part) => part.type === "text");
				return { role: "user", content: textOnly ? text(content) : content };
			}
			case "assistant": {
				const calls = message.tool_calls ?? [];
				for (const call of calls) toolNames.set(call.id, call.function.name);
				return {
					role: "assistant",
					// Workers AI refuses a null content.
					content: message.content == null ? "" : text(message.content),
					...(calls.length > 0 ? { tool_calls: calls } : {}),
				};
			}
			default: {
				// A tool result.
				const toolName = toolNames.get(message.tool_call_id);
				return {
					role: "tool",
					content: text(message.content),
					tool_call_id: message.tool_call_id,
					...(toolName ? { name: toolName } : {}),
				};
			}
		}
	});
}

/**
 * The request's tools as Workers AI takes them. Workers AI has no `tool_choice`: `none` sends no
 * tools and a named function sends only that one; `required` cannot be enforced and acts as `auto`.
 */
function toWorkersAiTools(request: ChatRequest): Array<Record<string, unknown>> | undefined {
	const choice = request.tool_choice;
	if (!request.tools?.length || choice === "none") return undefined;
	const tools =
		typeof choice === "object"
			? request.tools.filter((tool) => tool.function.name === choice.function.name)
			: request.tools;
	if (tools.length === 0) {
		throw new ProviderError("http", "tool_choice names an unknown tool", {
			status: 400,
			upstreamMessage: "tool_choice names a function that is not among tools",
		});
	}
	return tools.map((tool) => ({
		type: "function",
		function: {
			name: tool.function.name,
			description: tool.function.description ?? "",
			parameters: tool.function.parameters ?? { type: "object", properties: {} },
		},
	}));
}

const SAMPLING_KEYS = ["temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"] as const;

/** The `ai.run` input for a chat request. `stop`, `user` and `parallel_tool_calls` have no Workers AI equivalent. */
function toWorkersAiInput(request: ChatRequest, stream: boolean): Record<string, unknown> {
	const input: Record<string, unknown> = { messages: toWorkersAiMessages(request.messages) };
	const tools = toWorkersAiTools(request);
	if (tools) input.tools = tools;
	if (stream) input.stream = true;
	const maxTokens = request.max_completion_tokens ?? request.max_tokens;
	if (maxTokens != null) input.max_tokens = maxTokens;
	for (const key of SAMPLING_KEYS) {
		const value = request[key];
		if (value != null) input[key] = value;
	}
	const format = request.response_format;
	// Workers AI's JSON mode takes the bare JSON schema in `json_schema`, not OpenAI's `{name, schema}`.
	if (format?.type === "json_object") input.response_format = { type: "json_object" };
	if (format?.type === "json_schema") {
		input.response_format = { type: "json_schema", json_schema: format.json_schema.schema ?? { type: "object" } };
	}
	return input;
}

// ---- Answers ---------------------------------------------------------------------------------

interface Answer {
	content: string | null;
	toolCalls: ToolCall[];
	finishReason: FinishReason;
	usage: Usage | undefined;
}

/** A whole (non-streamed) answer in either dialect. */
function readAnswer(output: unknown, provider: string): Answer {
	if (typeof output === "string") return { content: output, toolCalls: [], finishReason: "stop", usage: undefined };
	if (!isRecord(output)) throw new ProviderError("protocol", `${provider} answered something that is not an answer`);
	let content: string | null;
	let rawCalls: unknown;
	let upstreamFinish: unknown;
	if (Array.isArray(output.choices)) {
		const choice = output.choices[0];
		const message = isRecord(choice) && isRecord(choice.message) ? choice.message : undefined;
		if (!message) throw new ProviderError("protocol", `${provider} answered a completion without a message`);
		content = textOf(message.content);
		rawCalls = message.tool_calls;
		upstreamFinish = isRecord(choice) ? choice.finish_reason : undefined;
	} else if ("response" in output || "tool_calls" in output) {
		content = textOf(output.response);
		rawCalls = output.tool_calls;
		upstreamFinish = output.finish_reason;
	} else {
		throw new ProviderError("protocol", `${provider} answered without a response`);
	}
	const toolCalls = Array.isArray(rawCalls) ? rawCalls.map((call) => toToolCall(call, provider)) : [];
	return {
		content: toolCalls.length > 0 ? content || null : (content ?? ""),
		toolCalls,
		finishReason: finishReason(toolCalls.length > 0, upstreamFinish === "length"),
		usage: readUsage(output.usage),
	};
}

/** One complete tool call in any of the shapes Workers AI uses; arguments become a JSON string, ids are made up if absent. */
function toToolCall(value: unknown, provider: string): ToolCall {
	const fn = isRecord(value) && isRecord(value.function) ? value.function : value;
	if (!isRecord(value) || !isRecord(fn) || typeof fn.name !== "string" || fn.name === "") {
		throw new ProviderError("protocol", `${provider} answered a tool call without a name`);
	}
	return {
		id: typeof value.id === "string" && value.id ? value.id : newCallId(),
		type: "function",
		function: { name: fn.name, arguments: argumentsText(fn.arguments) ?? "{}" },
	};
}

function completion(model: string, answer: Answer): ChatCompletion {
	return {
		id: `chatcmpl-${crypto.randomUUID()}`,
		object: "chat.completion",
		created: Math.floor(Date.now() / 1000),
		model,
		choices: [
			{
				index: 0,
				message: {
					role: "assistant",
					content: answer.content,
					...(answer.toolCalls.length > 0 ? { tool_calls: answer.toolCalls } : {}),
				},
				finish_reason: answer.finishReason,
			},
		],
		...(answer.usage ? { usage: answer.usage } : {}),
	};
}

// ---- Streams ---------------------------------------------------------------------------------

type Delta = ChatCompletionChunk["choices"][number]["delta"];
type ToolCallDelta = NonNullable<Delta["tool_calls"]>[number];

/** Makes the chunks of one streamed answer, which share an id, a timestamp and the model. */
function chunkMaker(model: string) {
	const id = `chatcmpl-${crypto.randomUUID()}`;
	const created = Math.floor(Date.now() / 1000);
	return {
		delta(delta: Delta, finishReason: FinishReason | null = null): ChatCompletionChunk {
			return {
				id,
				object: "chat.completion.chunk",
				created,
				model,
				choices: [{ index: 0, delta, finish_reason: finishReason }],
			};
		},
		usage(usage: Usage): ChatCompletionChunk {
			return { id, object: "chat.completion.chunk", created, model, choices: [], usage };
		},
	};
}

/** A whole answer replayed as a stream: role, content, each tool call, finish, usage. */
async function* answerChunks(answer: Answer, model: string): AsyncGenerator<ChatCompletionChunk> {
	const chunk = chunkMaker(model);
	yield chunk.delta({ role: "assistant", content: "" });
	if (answer.content) yield chunk.delta({ content: answer.content });
	for (const [index, call] of answer.toolCalls.entries()) yield chunk.delta({ tool_calls: [{ index, ...call }] });
	yield chunk.delta({}, answer.finishReason);
	if (answer.usage) yield chunk.usage(answer.usage);
}

/**
 * A Workers AI event stream as OpenAI chunks: a role chunk first, then content and tool-call deltas,
 * a finish chunk, and a `choices: []` chunk with usage when Workers AI reported it. A stream that
 * breaks, carries an error or something unreadable, or ends without `[DONE]` fails as `stream`.
 */
async function* translateStream(
	body: ReadableStream<Uint8Array>,
	model: string,
	provider: string,
): AsyncGenerator<ChatCompletionChunk> {
	const chunk = chunkMaker(model);
	const toolCalls = new StreamedToolCalls(provider);
	let usage: Usage | undefined;
	let length = false;
	let started = false;
	let done = false;
	try {
		for await (const event of readSse(body)) {
			// The role chunk waits for Workers AI's first event, so the router's first-chunk timeout measures the model.
			if (!started) {
				started = true;
				yield chunk.delta({ role: "assistant", content: "" });
			}
			if (event.data === "[DONE]") {
				done = true;
				break;
			}
			const data = parseEvent(event.data, provider);
			usage = readUsage(data.usage) ?? usage;
			const choice = Array.isArray(data.choices) && isRecord(data.choices[0]) ? data.choices[0] : undefined;
			const delta = choice && isRecord(choice.delta) ? choice.delta : undefined;
			if (choice?.finish_reason === "length" || data.finish_reason === "length") length = true;
			const content = textOf(delta ? delta.content : data.response);
			if (content) yield chunk.delta({ content });
			const calls = delta ? delta.tool_calls : data.tool_calls;
			if (Array.isArray(calls)) {
				for (const callDelta of toolCalls.add(calls)) yield chunk.delta({ tool_calls: [callDelta] });
			}
		}
	} catch (err) {
		if (err instanceof ProviderError) throw err;
		throw new ProviderError("stream", `${provider} stream broke off: ${errorMessage(err)}`);
	}
	if (!done) throw new ProviderError("stream", `${provider} stream ended without [DONE]`);
	toolCalls.finish();
	yield chunk.delta({}, finishReason(toolCalls.count > 0, length));
	if (usage) yield chunk.usage(usage);
}

function parseEvent(data: string, provider: string): Record<string, unknown> {
	let value: unknown;
	try {
		value = JSON.parse(data);
	} catch {
		throw new ProviderError("stream", `${provider} sent an event that is not JSON`);
	}
	if (!isRecord(value)) throw new ProviderError("stream", `${provider} sent an event that is not an object`);
	if (value.error != null) throw new ProviderError("stream", `${provider} sent an error event`);
	return value;
}

/**
 * Streamed tool calls, re-indexed for OpenAI. Workers AI sends either OpenAI-style deltas keyed by
 * `index` (id and name first, then argument fragments, then an all-null closing entry, skipped) or
 * whole calls without an index (`{name, arguments}`), each of which starts a new call. A call's
 * first OpenAI delta waits until its name is known, as OpenAI clients expect the name up front.
 */
class StreamedToolCalls {
	private readonly calls: Array<{ id: string | undefined; name: string | undefined; args: string; started: boolean }> =
		[];
	private readonly byIndex = new Map<number, number>();

	constructor(private readonly provider: string) {}

	get count(): number {
		return this.calls.length;
	}

	add(entries: unknown[]): ToolCallDelta[] {
		const out: ToolCallDelta[] = [];
		for (const entry of entries) {
			if (!isRecord(entry)) continue;
			const fn = isRecord(entry.function) ? entry.function : entry;
			const name = typeof fn.name === "string" && fn.name ? fn.name : undefined;
			const args = argumentsText(fn.arguments);
			const id = typeof entry.id === "string" && entry.id ? entry.id : undefined;
			if (!name && !id && !args) continue;
			const position = this.position(entry.index, name !== undefined);
			const call = this.calls[position];
			if (!call) continue;
			call.id ??= id;
			call.name ??= name;
			if (call.started) {
				if (args) out.push({ index: position, function: { arguments: args } });
				continue;
			}
			if (args) call.args += args;
			if (call.name) {
				call.started = true;
				out.push({
					index: position,
					id: call.id ?? newCallId(),
					type: "function",
					function: { name: call.name, arguments: call.args },
				});
			}
		}
		return out;
	}

	/** Throws if a call never got a name: the stream cannot be given to an OpenAI client as it is. */
	finish(): void {
		if (this.calls.some((call) => !call.started)) {
			throw new ProviderError("stream", `${this.provider} streamed a tool call without a name`);
		}
	}

	/** The call an entry belongs to: by upstream index, else a new call when it names one, else the last call. */
	private position(index: unknown, named: boolean): number {
		if (typeof index === "number") {
			const known = this.byIndex.get(index);
			if (known !== undefined) return known;
			this.byIndex.set(index, this.calls.length);
		} else if (!named && this.calls.length > 0) {
			return this.calls.length - 1;
		}
		this.calls.push({ id: undefined, name: undefined, args: "", started: false });
		return this.calls.length - 1;
	}
}

// ---- Errors ----------------------------------------------------------------------------------

/**
 * Workers AI's documented internal error codes (developers.cloudflare.com/workers-ai/platform/errors)
 * mapped for the router: 429 for capacity and account limits (retry or fall back), 400 for input the
 * client sent, `timeout` for its timeouts and aborts. The other codes (no such model, invalid model
 * id, account blocked or not allowed, model agreement, deprecated SDK, LoRA) are about the gateway's
 * own configuration or account, not the client's request, so they become 502 and the router may
 * fall back.
 */
const ERROR_CODES: Record<number, 429 | 400 | "timeout"> = {
	3036: 429,
	3040: 429,
	3003: 400,
	3006: 400,
	5004: 400,
	3007: "timeout",
	3008: "timeout",
};

/**
 * An `ai.run` failure as a ProviderError. The binding throws plain errors whose message carries the
 * internal code (`"3040: Capacity temporarily exceeded"`, sometimes prefixed, e.g. `InferenceUpstreamError:`);
 * without a known code the message decides: capacity or rate limits → 429, rejected input (schema
 * validation) → 400, anything else → 502. Only a 400 passes Workers AI's message on to the client.
 */
function runError(err: unknown, signal: AbortSignal, provider: string): ProviderError {
	if (err instanceof ProviderError) return err;
	if (signal.aborted) return new ProviderError("timeout", `${provider} did not answer in time`);
	const message = errorMessage(err);
	const code = Number(isRecord(err) && err.code !== undefined ? err.code : /(?:^|\D)(\d{4}):/.exec(message)?.[1]);
	const mapped =
		ERROR_CODES[code] ??
		(/capacity|rate.?limit|too many requests|\b429\b/i.test(message)
			? 429
			: /bad input|invalid input|validation|required propert|must (be|have)|too (large|long)/i.test(message)
				? 400
				: undefined);
	if (mapped === "timeout") return new ProviderError("timeout", `${provider} timed out: ${message.slice(0, 200)}`);
	const status = mapped ?? 502;
	return new ProviderError("http", `${provider} failed (${status}): ${message.slice(0, 200)}`, {
		status,
		upstreamMessage: status === 400 ? message.slice(0, 500) : undefined,
	});
}

// ---- Small helpers ---------------------------------------------------------------------------

function finishReason(hasToolCalls: boolean, length: boolean): FinishReason {
	return hasToolCalls ? "tool_calls" : length ? "length" : "stop";
}

function readUsage(value: unknown): Usage | undefined {
	if (!isRecord(value)) return undefined;
	const prompt = tokenCount(value.prompt_tokens);
	const completionTokens = tokenCount(value.completion_tokens);
	if (prompt === undefined && completionTokens === undefined) return undefined;
	const total = tokenCount(value.total_tokens) ?? (prompt ?? 0) + (completionTokens ?? 0);
	return { prompt_tokens: prompt ?? 0, completion_tokens: completionTokens ?? 0, total_tokens: total };
}

function tokenCount(value: unknown): number | undefined {
	return typeof value === "number" && Number.isFinite(value) && value >= 0 ? Math.round(value) : undefined;
}

/** Answer text: JSON mode may give an object, some models a number; absent is null. */
function textOf(value: unknown): string | null {
	if (value === null || value === undefined) return null;
	if (typeof value === "string") return value;
	if (typeof value === "object") return JSON.stringify(value);
	return String(value);
}

/** Tool-call arguments as OpenAI's JSON string (Workers AI often gives an object); undefined when absent. */
function argumentsText(value: unknown): string | undefined {
	if (value === null || value === undefined || value === "") return undefined;
	return typeof value === "string" ? value : JSON.stringify(value);
}

function newCallId(): string {
	return `call_${randomHex(12)}`;
}

function base64Floats(values: number[]): string {
	return toBase64(new Float32Array(values).buffer);
}

function isStringArray(values: readonly unknown[]): values is string[] {
	return values.every((value) => typeof value === "string");
}
