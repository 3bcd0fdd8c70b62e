/**
 * The Anthropic provider: OpenAI chat requests translated to Anthropic's Messages API
 * (`POST {baseUrl}/v1/messages`), and its answers, whole or streamed, translated back to OpenAI shapes.
 *
 * Where the two APIs do not map one to one:
 *  - system and developer messages, wherever they stand, become the top-level `system` text, in order;
 *  - consecutive turns of one role are merged (Anthropic requires user and assistant to alternate), and
 *    `tool` messages become `tool_result` blocks of a user turn; empty text is dropped (Anthropic refuses it);
 *  - `response_format` has no Messages API equivalent: it becomes a system instruction to answer with one
 *    JSON object only (quoting the schema when one is given), so the model is asked, not constrained;
 *  - `max_tokens`, which Anthropic requires, defaults to 4096; `temperature` is clamped to Anthropic's 0..1;
 *  - `n`, `seed`, `presence_penalty` and `frequency_penalty` have no equivalent and are not sent;
 *  - answer blocks other than text and tool use (thinking, server tools) are not translated.
 */
import { z } from "zod";
import { errorMessage, exceedsJsonDepth, isRecord, MAX_JSON_DEPTH } from "../../lib";
import { readSse } from "../sse";
import type {
	ChatCompletion,
	ChatCompletionChunk,
	ChatMessage,
	ChatRequest,
	FinishReason,
	ResponseFormat,
	ToolCall,
	ToolChoice,
	Usage,
} from "../types";
import { type ChatStream, fetchError, httpError, type Provider, type ProviderCall, ProviderError } from "./interface";

export interface AnthropicProviderOptions {
	/** API root without `/v1`, e.g. `https://api.anthropic.com`. */
	baseUrl: string;
	/** Extra request headers (e.g. `anthropic-beta`); never the key, which comes with each call. */
	headers?: Record<string, string>;
	/** The fetch to call; defaults to the global one. */
	fetch?: typeof fetch;
}

const ANTHROPIC_VERSION = "2023-06-01";
const DEFAULT_MAX_TOKENS = 4096;

type TextBlock = { type: "text"; text: string };
type ImageBlock = {
	type: "image";
	source: { type: "base64"; media_type: string; data: string } | { type: "url"; url: string };
};
type ToolUseBlock = { type: "tool_use"; id: string; name: string; input: Record<string, unknown> };
type ToolResultBlock = { type: "tool_result"; tool_use_id: string; content: string | TextBlock[] };
type RequestBlock = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock;
type AnthropicMessage = { role: "user" | "assistant"; content: RequestBlock[] };
type AnthropicToolChoice = ({ type: "auto" | "any" | "none" } | { type: "tool"; name: string }) & {
	disable_parallel_tool_use?: boolean;
};

interface AnthropicRequest {
	model: string;
	max_tokens: number;
	messages: AnthropicMessage[];
	system?: string;
	temperature?: number;
	top_p?: number;
	stop_sequences?: string[];
	metadata?: { user_id: string };
	tools?: Array<{ name: string; description?: string; input_schema: Record<string, unknown> }>;
	tool_choice?: AnthropicToolChoice;
	stream?: true;
}

/**
 * A provider for Anthropic's Messages API (or a server speaking it). The key comes with each call
 * (`x-api-key`); a call without one is sent without it, for keyless local servers.
 */
export function anthropicProvider(name: string, options: AnthropicProviderOptions): Provider {
	const endpoint = new URL(`${options.baseUrl.replace(/\/+$/, "")}/v1/messages`).href;
	const doFetch = options.fetch ?? ((input, init) => fetch(input, init));

	async function send(call: ProviderCall<ChatRequest>, stream: boolean): Promise<Response> {
		const body = JSON.stringify(toAnthropicRequest(call.model, call.request, stream, name));
		const headers: Record<string, string> = {
			"anthropic-version": ANTHROPIC_VERSION,
			...options.headers,
			"content-type": "application/json",
		};
		if (call.apiKey) headers["x-api-key"] = call.apiKey;
		if (call.traceparent) headers.traceparent = call.traceparent;
		let response: Response;
		try {
			response = await doFetch(endpoint, { method: "POST", headers, body, signal: call.signal });
		} catch (err) {
			throw fetchError(err, call.signal, name);
		}
		if (!response.ok) throw await httpError(response, name);
		call.onResponse?.();
		return response;
	}

	return {
		name,
		kind: "anthropic",
		async chat(call) {
			const response = await send(call, false);
			let json: unknown;
			try {
				json = await response.json();
			} catch (err) {
				throw call.signal.aborted
					? fetchError(err, call.signal, name)
					: new ProviderError("protocol", `${name} answered with a body that is not JSON`);
			}
			const message = MessageSchema.safeParse(json);
			if (!message.success) throw new ProviderError("protocol", `${name} answered with an unexpected body`);
			return toCompletion(message.data);
		},
		async chatStream(call): Promise<ChatStream> {
			const response = await send(call, true);
			if (!response.body) throw new ProviderError("protocol", `${name} answered a stream request without a body`);
			return translateStream(response.body, name);
		},
	};
}

/** A request this provider cannot translate: the next target may take it; if none does, the client gets 400. */
function badRequest(provider: string, reason: string): ProviderError {
	return new ProviderError("unsupported", `${provider} cannot take this request: ${reason}`, {
		status: 400,
		upstreamMessage: reason,
	});
}

function toAnthropicRequest(model: string, request: ChatRequest, stream: boolean, provider: string): AnthropicRequest {
	const { system, messages } = toMessages(request.messages, provider);
	const instruction = jsonInstruction(request.response_format);
	if (instruction) system.push(instruction);
	const body: AnthropicRequest = {
		model,
		max_tokens: request.max_completion_tokens ?? request.max_tokens ?? DEFAULT_MAX_TOKENS,
		messages,
	};
	if (system.length > 0) body.system = system.join("\n\n");
	if (request.temperature != null) body.temperature = Math.min(1, request.temperature);
	if (request.top_p != null) body.top_p = request.top_p;
	const stop = typeof request.stop === "string" ? [request.stop] : (request.stop ?? []);
	if (stop.length > 0) body.stop_sequences = stop;
	if (request.user) body.metadata = { user_id: request.user };
	if (request.tools && request.tools.length > 0) {
		body.tools = request.tools.map(({ function: fn }) => ({
			name: fn.name,
			...(fn.description ? { description: fn.description } : {}),
			input_schema: { type: "object", ...fn.parameters },
		}));
		const choice = toolChoice(request.tool_choice, request.parallel_tool_calls);
		if (choice) body.tool_choice = choice;
	}
	if (stream) body.stream = true;
	return body;
}

function toMessages(messages: ChatMessage[], provider: string): { system: string[]; messages: AnthropicMessage[] } {
	const system: string[] = [];
	const turns: AnthropicMessage[] = [];
	const push = (role: AnthropicMessage["role"], blocks: RequestBlock[]) => {
		if (blocks.length === 0) return;
		const last = turns.at(-1);
		if (last?.role === role) last.content.push(...blocks);
		else turns.push({ role, content: blocks });
	};
	for (const message of messages) {
		switch (message.role) {
			case "system":
			case "developer": {
				const text = joinText(message.content);
				if (text) system.push(text);
				break;
			}
			case "user":
				push(
					"user",
					typeof message.content === "string"
						? textBlocks(message.content)
						: message.content.flatMap((part): RequestBlock[] =>
								part.type === "text" ? textBlocks(part.text) : [imageBlock(part.image_url.url, provider)],
							),
				);
				break;
			case "assistant":
				push("assistant", [
					...textBlocks(message.content ?? ""),
					...(message.tool_calls ?? []).map((call) => toolUseBlock(call, provider)),
				]);
				break;
			case "tool":
				push("user", [
					{
						type: "tool_result",
						tool_use_id: message.tool_call_id,
						content: typeof message.content === "string" ? message.content : textBlocks(message.content),
					},
				]);
				break;
		}
	}
	return { system, messages: turns };
}

function joinText(content: string | Array<{ text: string }>): string {
	return typeof content === "string" ? content : content.map((part) => part.text).join("\n");
}

function textBlocks(content: string | Array<{ text: string }>): TextBlock[] {
	const parts = typeof content === "string" ? [content] : content.map((part) => part.text);
	return parts.filter((text) => text !== "").map((text) => ({ type: "text", text }));
}

function imageBlock(url: string, provider: string): ImageBlock {
	if (/^https?:\/\//i.test(url)) return { type: "image", source: { type: "url", url } };
	const comma = url.indexOf(",");
	if (url.slice(0, 5).toLowerCase() === "data:" && comma !== -1) {
		const [mediaType = "", ...params] = url.slice(5, comma).split(";");
		if (/^image\/[\w.+-]+$/i.test(mediaType) && params.includes("base64")) {
			return {
				type: "image",
				source: { type: "base64", media_type: mediaType.toLowerCase(), data: url.slice(comma + 1) },
			};
		}
	}
	throw badRequest(provider, "image_url must be an http(s) URL or a base64 data: URL of an image");
}

function toolUseBlock(call: ToolCall, provider: string): ToolUseBlock {
	// Arguments are a string the body's depth bound does not see into: bound them before parsing, or the
	// upstream request's JSON.stringify would overflow the stack on them.
	if (exceedsJsonDepth(call.function.arguments)) {
		throw badRequest(provider, `the arguments of tool call ${call.id} nest deeper than ${MAX_JSON_DEPTH} levels`);
	}
	let input: unknown;
	try {
		input = call.function.arguments.trim() === "" ? {} : JSON.parse(call.function.arguments);
	} catch {
		input = undefined;
	}
	if (!isRecord(input)) throw badRequest(provider, `the arguments of tool call ${call.id} are not a JSON object`);
	return { type: "tool_use", id: call.id, name: call.function.name, input };
}

function toolChoice(choice: ToolChoice | undefined, parallel: boolean | undefined): AnthropicToolChoice | undefined {
	const base: AnthropicToolChoice | undefined =
		choice === undefined
			? parallel === false
				? { type: "auto" }
				: undefined
			: choice === "auto"
				? { type: "auto" }
				: choice === "required"
					? { type: "any" }
					: choice === "none"
						? { type: "none" }
						: { type: "tool", name: choice.function.name };
	return base && parallel === false && base.type !== "none" ? { ...base, disable_parallel_tool_use: true } : base;
}

function jsonInstruction(format: ResponseFormat | undefined): string | undefined {
	const only =
		"Answer with a single JSON object and nothing else: no prose before or after it, no Markdown code fence.";
	if (format?.type === "json_object") return only;
	if (format?.type !== "json_schema") return undefined;
	const schema = format.json_schema.schema;
	return schema ? `${only} The object must conform to this JSON Schema:\n${JSON.stringify(schema)}` : only;
}

// Anthropic's answers. Kinds of blocks, deltas and events are added over time, and a reader must skip
// those it does not know: `otherKind` reads any `type` but the listed ones as null.
const otherKind = (...known: string[]) =>
	z.object({ type: z.string().refine((type) => !known.includes(type)) }).transform(() => null);

const count = z.number().int().min(0);
const UsageSchema = z.object({
	input_tokens: count,
	output_tokens: count,
	cache_creation_input_tokens: count.nullish(),
	cache_read_input_tokens: count.nullish(),
});
type AnthropicUsage = z.infer<typeof UsageSchema>;

const MessageSchema = z.object({
	id: z.string(),
	model: z.string(),
	content: z.array(
		z.union([
			z.object({ type: z.literal("text"), text: z.string() }),
			z.object({
				type: z.literal("tool_use"),
				id: z.string(),
				name: z.string(),
				input: z.record(z.string(), z.unknown()),
			}),
			otherKind("text", "tool_use"),
		]),
	),
	stop_reason: z.string().nullable(),
	usage: UsageSchema,
});
type AnthropicAnswer = z.infer<typeof MessageSchema>;

const STREAM_EVENTS = [
	z.object({
		type: z.literal("message_start"),
		message: z.object({ id: z.string(), model: z.string(), usage: UsageSchema }),
	}),
	z.object({
		type: z.literal("content_block_start"),
		index: count,
		content_block: z.union([
			z.object({ type: z.literal("text"), text: z.string() }),
			z.object({ type: z.literal("tool_use"), id: z.string(), name: z.string() }),
			otherKind("text", "tool_use"),
		]),
	}),
	z.object({
		type: z.literal("content_block_delta"),
		index: count,
		delta: z.union([
			z.object({ type: z.literal("text_delta"), text: z.string() }),
			z.object({ type: z.literal("input_json_delta"), partial_json: z.string() }),
			otherKind("text_delta", "input_json_delta"),
		]),
	}),
	z.object({ type: z.literal("content_block_stop"), index: count }),
	z.object({
		type: z.literal("message_delta"),
		delta: z.object({ stop_reason: z.string().nullish() }),
		// Cumulative counts: output always, the input ones only on some answers.
		usage: UsageSchema.partial().extend({ output_tokens: count }).optional(),
	}),
	z.object({ type: z.literal("message_stop") }),
	z.object({ type: z.literal("error"), error: z.object({ type: z.string(), message: z.string() }) }),
] as const;
const StreamEventSchema = z.union([
	...STREAM_EVENTS,
	otherKind(...STREAM_EVENTS.map((schema) => schema.shape.type.value)),
]);

const FINISH_REASONS = new Map<string, FinishReason>([
	["end_turn", "stop"],
	["stop_sequence", "stop"],
	["pause_turn", "stop"],
	["max_tokens", "length"],
	["model_context_window_exceeded", "length"],
	["tool_use", "tool_calls"],
	["refusal", "content_filter"],
]);

function finishReason(stopReason: string | null | undefined): FinishReason | null {
	return stopReason == null ? null : (FINISH_REASONS.get(stopReason) ?? "stop");
}

/** Prompt tokens include those written to and read from Anthropic's prompt cache, which are billed too. */
function toUsage(usage: AnthropicUsage): Usage {
	const prompt = usage.input_tokens + (usage.cache_creation_input_tokens ?? 0) + (usage.cache_read_input_tokens ?? 0);
	return { prompt_tokens: prompt, completion_tokens: usage.output_tokens, total_tokens: prompt + usage.output_tokens };
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

function toCompletion(answer: AnthropicAnswer): ChatCompletion {
	const texts: string[] = [];
	const toolCalls: ToolCall[] = [];
	for (const block of answer.content) {
		if (block?.type === "text") texts.push(block.text);
		else if (block?.type === "tool_use") {
			toolCalls.push({
				id: block.id,
				type: "function",
				function: { name: block.name, arguments: JSON.stringify(block.input) },
			});
		}
	}
	return {
		id: answer.id,
		object: "chat.completion",
		created: nowSeconds(),
		model: answer.model,
		choices: [
			{
				index: 0,
				message: {
					role: "assistant",
					content: texts.length > 0 ? texts.join("") : null,
					...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
				},
				finish_reason: finishReason(answer.stop_reason),
				logprobs: null,
			},
		],
		usage: toUsage(answer.usage),
	};
}

type Delta = ChatCompletionChunk["choices"][number]["delta"];
interface StreamHead {
	id: string;
	model: string;
	created: number;
}

function chunk(head: StreamHead, delta: Delta, finish: FinishReason | null = null): ChatCompletionChunk {
	return {
		id: head.id,
		object: "chat.completion.chunk",
		created: head.created,
		model: head.model,
		choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
	};
}

function streamError(provider: string, reason: string, upstreamMessage?: string): ProviderError {
	return new ProviderError("stream", `${provider} stream failed: ${reason}`, { upstreamMessage });
}

function parseEvent(data: string, provider: string): z.infer<typeof StreamEventSchema> {
	let json: unknown;
	try {
		json = JSON.parse(data);
	} catch {
		throw streamError(provider, "an event is not JSON");
	}
	const event = StreamEventSchema.safeParse(json);
	if (!event.success) throw streamError(provider, "an event has an unexpected shape");
	return event.data;
}

/**
 * Anthropic's stream events as OpenAI chunks: the role first, then text and tool-call deltas (tool calls
 * numbered 0, 1, 2… in the order their blocks start), the finish reason, and last a usage chunk with no
 * choices. Anything but a clean `message_stop` ends in a `stream` ProviderError.
 */
async function* translateStream(
	body: ReadableStream<Uint8Array>,
	provider: string,
): AsyncGenerator<ChatCompletionChunk> {
	let head: StreamHead | undefined;
	let usage: AnthropicUsage = { input_tokens: 0, output_tokens: 0 };
	let finished = false;
	/** Content block index → the tool call's OpenAI index and whether any argument text has been sent. */
	const tools = new Map<number, { index: number; sentArguments: boolean }>();
	try {
		for await (const sse of readSse(body)) {
			const event = parseEvent(sse.data, provider);
			if (event === null) continue;
			if (event.type === "error") throw streamError(provider, event.error.type, event.error.message.slice(0, 500));
			if (event.type === "message_start") {
				head = { id: event.message.id, model: event.message.model, created: nowSeconds() };
				usage = event.message.usage;
				yield chunk(head, { role: "assistant", content: "" });
				continue;
			}
			if (!head) throw streamError(provider, `${event.type} came before message_start`);
			switch (event.type) {
				case "content_block_start": {
					const block = event.content_block;
					if (block?.type === "text" && block.text !== "") yield chunk(head, { content: block.text });
					else if (block?.type === "tool_use") {
						const index = tools.size;
						tools.set(event.index, { index, sentArguments: false });
						yield chunk(head, {
							tool_calls: [{ index, id: block.id, type: "function", function: { name: block.name, arguments: "" } }],
						});
					}
					break;
				}
				case "content_block_delta": {
					const delta = event.delta;
					if (delta?.type === "text_delta" && delta.text !== "") yield chunk(head, { content: delta.text });
					else if (delta?.type === "input_json_delta") {
						const tool = tools.get(event.index);
						if (!tool) throw streamError(provider, `tool input for block ${event.index}, which is not a tool call`);
						if (delta.partial_json === "") break;
						tool.sentArguments = true;
						yield chunk(head, { tool_calls: [{ index: tool.index, function: { arguments: delta.partial_json } }] });
					}
					break;
				}
				case "content_block_stop": {
					// A call without arguments still needs a JSON object for clients to parse.
					const tool = tools.get(event.index);
					if (tool && !tool.sentArguments) {
						tool.sentArguments = true;
						yield chunk(head, { tool_calls: [{ index: tool.index, function: { arguments: "{}" } }] });
					}
					break;
				}
				case "message_delta": {
					const counted = event.usage;
					if (counted) {
						usage = {
							input_tokens: counted.input_tokens ?? usage.input_tokens,
							output_tokens: counted.output_tokens,
							cache_creation_input_tokens: counted.cache_creation_input_tokens ?? usage.cache_creation_input_tokens,
							cache_read_input_tokens: counted.cache_read_input_tokens ?? usage.cache_read_input_tokens,
						};
					}
					const finish = finishReason(event.delta.stop_reason);
					if (finish && !finished) {
						finished = true;
						yield chunk(head, {}, finish);
					}
					break;
				}
				case "message_stop":
					if (!finished) yield chunk(head, {}, "stop");
					yield { ...chunk(head, {}), choices: [], usage: toUsage(usage) };
					return;
			}
		}
	} catch (err) {
		if (err instanceof ProviderError) throw err;
		throw streamError(provider, errorMessage(err));
	}
	throw streamError(provider, "the stream ended before message_stop");
}
