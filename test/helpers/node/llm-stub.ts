/**
 * A stub upstream LLM server on 127.0.0.1 for tests and benchmarks. It speaks OpenAI's HTTP format
 * (`/openai/v1/chat/completions`, `/openai/v1/embeddings`, and the same under `/keyless/openai/v1/`
 * for a key-less local server) and Anthropic's (`/anthropic/v1/messages`), streamed and not, with the
 * providers' own bodies, event sequences, error shapes and headers, so provider translators meet what
 * production sends.
 *
 * The request's `model` picks the behaviour (see {@link Scenario}), so a gateway config can point
 * aliases at scenario models; `script(model, steps)` queues scenarios for one model, one per request.
 * Any other model name answers like `ok`. Usage is deterministic: prompt tokens = words in the
 * messages + 10, completion tokens = words of the answer (each tool call's arguments count as one).
 *
 * Loaded by vitest and by plain Node through its built-in type stripping (as `gateway.ts` is): keep
 * the syntax erasable and relative imports spelled with `.ts`.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** Behaviours chosen by the model name. */
export const SCENARIOS = [
	/** A plain answer ({@link OK_TEXT}). */
	"ok",
	/** Answers the last user message's text. */
	"echo",
	/** Two tool calls (Anthropic: after a short text block), arguments split over several chunks in streams. */
	"tools",
	/** 429 with `Retry-After: 1` and the provider's error body. */
	"rate-limited",
	/** 500 with the provider's error body. */
	"error",
	/** Reads the request and never answers, until the client goes away or the stub closes. */
	"hang",
	/** Streams: the role chunk (Anthropic: message and block start) and two text deltas, then a dropped socket.
	 * Not streamed: the headers and half the body, then a dropped socket. */
	"broken-stream",
	/** Nothing on the wire for {@link SLOW_FIRST_BYTE_MS}, then an `ok` answer. */
	"slow-first-byte",
	/** Nothing on the wire until {@link LlmStub.release} is called (or the stub closes), then an `ok` answer. */
	"held",
	/** Valid JSON text ({@link JSON_TEXT}), for `response_format`. */
	"json",
] as const;
/**
 * A scenario; `chunks:<text>` streams `<text>` {@link CHUNK_CHARS} characters per chunk (whole when not
 * streamed); `tool-args:<json>` answers one tool call with those arguments (streamed a few characters a chunk).
 */
export type Scenario = (typeof SCENARIOS)[number] | `chunks:${string}` | `tool-args:${string}`;

export const OK_TEXT = "Hello! This is the stub model answering.";
export const JSON_TEXT = JSON.stringify({ answer: "ok", items: [1, 2, 3] });
export const SLOW_FIRST_BYTE_MS = 200;
export const CHUNK_CHARS = 3;
/** Vector length of embeddings when the request names no `dimensions`. */
export const EMBEDDING_DIMS = 8;
export const SYSTEM_FINGERPRINT = "fp_stub00001";
const TOOL_ARGUMENTS = ['{"city":"Paris","unit":"celsius"}', '{"city":"Tokyo","unit":"celsius"}'];
const TOOLS_PREAMBLE = "I will look up both cities.";
const ARGUMENT_PIECE_CHARS = 5;
const MAX_BODY_BYTES = 16 * 1024 * 1024;

type Api = "openai" | "anthropic";

export interface RecordedRequest {
	method: string;
	/** Path and query, e.g. `/openai/v1/chat/completions`. */
	path: string;
	/** Lower-case names; repeated headers joined with `, `. */
	headers: Record<string, string>;
	/** The parsed JSON body; `undefined` when absent or not JSON. */
	body: unknown;
	/** The key that reached the stub: OpenAI's bearer token or Anthropic's `x-api-key`. */
	apiKey: string | undefined;
	/** What the stub did; `undefined` when it refused the request first (401, 400, 404). */
	scenario: Scenario | undefined;
	/** `Date.now()` when the body had been read. */
	time: number;
}

export interface LlmStub {
	/** `http://127.0.0.1:<port>` */
	url: string;
	/** OpenAI-style base URL (`url` + `/openai/v1`). */
	openaiBaseUrl: string;
	/** OpenAI-compatible base URL that needs no key (`url` + `/keyless/openai/v1`), like a local inference server. */
	keylessOpenaiBaseUrl: string;
	/** Anthropic-style base URL (`url` + `/anthropic`; the client appends `/v1/messages`). */
	anthropicBaseUrl: string;
	/** Every request received, in order. */
	requests: RecordedRequest[];
	/** Forgets recorded requests and queued scripts. */
	reset(): void;
	/**
	 * Queues scenarios for `model`, one per request that passes the key and body checks; when the queue is
	 * empty the model's own name applies.
	 */
	script(model: string, steps: Scenario[]): void;
	/** Lets every `held` request answer, those waiting now and any that come later. */
	release(): void;
	/** Stops listening and ends every open connection, hung ones included. */
	close(): Promise<void>;
}

interface Route {
	api: Api;
	kind: "chat" | "embeddings";
	keyless: boolean;
}

const ROUTES = new Map<string, Route>([
	["/openai/v1/chat/completions", { api: "openai", kind: "chat", keyless: false }],
	["/openai/v1/embeddings", { api: "openai", kind: "embeddings", keyless: false }],
	["/keyless/openai/v1/chat/completions", { api: "openai", kind: "chat", keyless: true }],
	["/keyless/openai/v1/embeddings", { api: "openai", kind: "embeddings", keyless: true }],
	["/anthropic/v1/messages", { api: "anthropic", kind: "chat", keyless: false }],
]);

/** The error `type` per status, as each provider sends it. */
const ERROR_TYPES: Record<Api, Record<number, string>> = {
	openai: { 400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error", 429: "requests" },
	anthropic: {
		400: "invalid_request_error",
		401: "authentication_error",
		404: "not_found_error",
		429: "rate_limit_error",
	},
};

/** What to answer, in provider-neutral terms. */
interface Answer {
	text: string;
	/** `text` as streamed: the pieces join back to it. */
	pieces: string[];
	toolCalls: Array<{ id: string; name: string; arguments: string }>;
	promptTokens: number;
	completionTokens: number;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
	return typeof value === "object" && value !== null && !Array.isArray(value);
}

function words(text: string): number {
	return text.split(/\s+/).filter(Boolean).length;
}

/** The text of a message's content: a string, or the text of its parts (OpenAI parts, Anthropic blocks and tool results). */
function textOf(content: unknown): string {
	if (typeof content === "string") return content;
	if (!Array.isArray(content)) return "";
	return content
		.map((part) => (isObject(part) ? (typeof part.text === "string" ? part.text : textOf(part.content)) : ""))
		.join(" ");
}

function messagesOf(body: Json): Json[] {
	return Array.isArray(body.messages) ? body.messages.filter(isObject) : [];
}

function toolNames(body: Json, api: Api): string[] {
	const tools = Array.isArray(body.tools) ? body.tools.filter(isObject) : [];
	const names = tools.map((t) => (api === "anthropic" ? t.name : isObject(t.function) ? t.function.name : undefined));
	return names.filter((n): n is string => typeof n === "string");
}

function newId(prefix: string): string {
	return `${prefix}${randomBytes(12).toString("hex")}`;
}

function splitEvery(text: string, size: number): string[] {
	const pieces: string[] = [];
	for (let i = 0; i < text.length; i += size) pieces.push(text.slice(i, i + size));
	return pieces;
}

function answerFor(scenario: Scenario, body: Json, api: Api): Answer {
	const messages = messagesOf(body);
	const promptTokens = words(`${textOf(body.system)} ${messages.map((m) => textOf(m.content)).join(" ")}`) + 10;
	let text = OK_TEXT;
	let toolCalls: Answer["toolCalls"] = [];
	if (scenario === "echo") text = textOf(messages.findLast((m) => m.role === "user")?.content);
	else if (scenario === "json") text = JSON_TEXT;
	else if (scenario.startsWith("chunks:")) text = scenario.slice("chunks:".length);
	else if (scenario.startsWith("tool-args:")) {
		text = "";
		const names = toolNames(body, api);
		toolCalls = [
			{
				id: newId(api === "anthropic" ? "toolu_01" : "call_"),
				name: names[0] ?? "send_mail",
				arguments: scenario.slice("tool-args:".length),
			},
		];
	} else if (scenario === "tools") {
		const names = toolNames(body, api);
		text = api === "anthropic" ? TOOLS_PREAMBLE : "";
		toolCalls = TOOL_ARGUMENTS.map((args, i) => ({
			id: newId(api === "anthropic" ? "toolu_01" : "call_"),
			name: names[i] ?? names[0] ?? "get_weather",
			arguments: args,
		}));
	}
	const pieces = scenario.startsWith("chunks:") ? splitEvery(text, CHUNK_CHARS) : text.split(/(?=\s)/).filter(Boolean);
	return { text, pieces, toolCalls, promptTokens, completionTokens: words(text) + toolCalls.length };
}

/** Checks what the real APIs require; returns the provider's message and the missing field, if any. */
function missingField(route: Route, body: Json): { message: string; param: string } | undefined {
	const required = route.kind === "embeddings" ? ["model", "input"] : ["model", "messages"];
	if (route.api === "anthropic") required.push("max_tokens");
	const missing = required.find((field) => body[field] === undefined);
	if (missing === undefined) return undefined;
	const message = route.api === "openai" ? `Missing required parameter: '${missing}'.` : `${missing}: Field required`;
	return { message, param: missing };
}

// ---------------------------------------------------------------- responses

/** OpenAI names its request id `x-request-id`, Anthropic `request-id`. */
function requestIdHeader(api: Api, id: string): Record<string, string> {
	return { [api === "openai" ? "x-request-id" : "request-id"]: id };
}

function sendJson(
	res: ServerResponse,
	api: Api,
	status: number,
	body: unknown,
	headers: Record<string, string> = {},
): void {
	const text = JSON.stringify(body);
	res.writeHead(status, {
		"content-type": "application/json",
		"content-length": Buffer.byteLength(text),
		...requestIdHeader(api, newId("req_")),
		...headers,
	});
	res.end(text);
}

function sendError(
	res: ServerResponse,
	api: Api,
	status: number,
	message: string,
	options: { param?: string; code?: string; headers?: Record<string, string> } = {},
): void {
	const type = ERROR_TYPES[api][status] ?? (api === "openai" ? "server_error" : "api_error");
	const requestId = newId("req_");
	const body =
		api === "openai"
			? { error: { message, type, param: options.param ?? null, code: options.code ?? null } }
			: { type: "error", error: { type, message }, request_id: requestId };
	sendJson(res, api, status, body, { ...requestIdHeader(api, requestId), ...options.headers });
}

function openaiUsage(a: Answer): Json {
	return {
		prompt_tokens: a.promptTokens,
		completion_tokens: a.completionTokens,
		total_tokens: a.promptTokens + a.completionTokens,
		prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
		completion_tokens_details: {
			reasoning_tokens: 0,
			audio_tokens: 0,
			accepted_prediction_tokens: 0,
			rejected_prediction_tokens: 0,
		},
	};
}

function openaiCompletion(a: Answer, model: string): Json {
	const toolCalls = a.toolCalls.map((t) => ({
		id: t.id,
		type: "function",
		function: { name: t.name, arguments: t.arguments },
	}));
	const message: Json = {
		role: "assistant",
		content: toolCalls.length ? null : a.text,
		refusal: null,
		annotations: [],
	};
	if (toolCalls.length) message.tool_calls = toolCalls;
	return {
		id: newId("chatcmpl-"),
		object: "chat.completion",
		created: Math.floor(Date.now() / 1000),
		model,
		choices: [{ index: 0, message, logprobs: null, finish_reason: toolCalls.length ? "tool_calls" : "stop" }],
		usage: openaiUsage(a),
		service_tier: "default",
		system_fingerprint: SYSTEM_FINGERPRINT,
	};
}

/** OpenAI's stream: a role chunk, content or tool-call deltas, a finish chunk, the usage chunk if asked for, `[DONE]`. */
function openaiFrames(a: Answer, model: string, includeUsage: boolean): string[] {
	const id = newId("chatcmpl-");
	const created = Math.floor(Date.now() / 1000);
	const base = { id, object: "chat.completion.chunk", created, model, service_tier: "default" };
	const frame = (value: Json) =>
		`data: ${JSON.stringify({ ...base, system_fingerprint: SYSTEM_FINGERPRINT, ...value })}\n\n`;
	const chunk = (delta: Json, finish: string | null = null) =>
		frame({
			choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
			...(includeUsage ? { usage: null } : {}),
		});
	const frames = [chunk({ role: "assistant", content: a.toolCalls.length ? null : "", refusal: null })];
	for (const piece of a.toolCalls.length ? [] : a.pieces) frames.push(chunk({ content: piece }));
	a.toolCalls.forEach((t, index) => {
		frames.push(
			chunk({ tool_calls: [{ index, id: t.id, type: "function", function: { name: t.name, arguments: "" } }] }),
		);
		for (const piece of splitEvery(t.arguments, ARGUMENT_PIECE_CHARS)) {
			frames.push(chunk({ tool_calls: [{ index, function: { arguments: piece } }] }));
		}
	});
	frames.push(chunk({}, a.toolCalls.length ? "tool_calls" : "stop"));
	if (includeUsage) frames.push(frame({ choices: [], usage: openaiUsage(a) }));
	frames.push("data: [DONE]\n\n");
	return frames;
}

function anthropicMessage(a: Answer, model: string): Json {
	const content: Json[] = a.text || !a.toolCalls.length ? [{ type: "text", text: a.text }] : [];
	for (const t of a.toolCalls)
		content.push({ type: "tool_use", id: t.id, name: t.name, input: JSON.parse(t.arguments) });
	return {
		id: newId("msg_01"),
		type: "message",
		role: "assistant",
		model,
		content,
		stop_reason: a.toolCalls.length ? "tool_use" : "end_turn",
		stop_sequence: null,
		usage: {
			input_tokens: a.promptTokens,
			cache_creation_input_tokens: 0,
			cache_read_input_tokens: 0,
			output_tokens: a.completionTokens,
			service_tier: "standard",
		},
	};
}

/** Anthropic's stream: message_start, per block start (ping after the first) / deltas / stop, message_delta, message_stop. */
function anthropicFrames(a: Answer, model: string): string[] {
	const event = (value: Json) => `event: ${value.type}\ndata: ${JSON.stringify(value)}\n\n`;
	const message = anthropicMessage(a, model);
	const usage = message.usage as Json;
	const frames = [
		event({
			type: "message_start",
			message: { ...message, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } },
		}),
	];
	const blocks: Array<{ start: Json; deltas: Json[] }> = [];
	if (a.text || !a.toolCalls.length) {
		const deltas = a.pieces.map((text) => ({ type: "text_delta", text }));
		blocks.push({ start: { type: "text", text: "" }, deltas });
	}
	for (const t of a.toolCalls) {
		const deltas = ["", ...splitEvery(t.arguments, ARGUMENT_PIECE_CHARS)].map((partial_json) => ({
			type: "input_json_delta",
			partial_json,
		}));
		blocks.push({ start: { type: "tool_use", id: t.id, name: t.name, input: {} }, deltas });
	}
	blocks.forEach((block, index) => {
		frames.push(event({ type: "content_block_start", index, content_block: block.start }));
		if (index === 0) frames.push(event({ type: "ping" }));
		for (const delta of block.deltas) frames.push(event({ type: "content_block_delta", index, delta }));
		frames.push(event({ type: "content_block_stop", index }));
	});
	frames.push(
		event({
			type: "message_delta",
			delta: { stop_reason: message.stop_reason, stop_sequence: null },
			usage: { output_tokens: a.completionTokens },
		}),
		event({ type: "message_stop" }),
	);
	return frames;
}

/** A unit vector from a hash of the input: equal inputs give equal vectors, nothing more. */
function embedding(input: string, dims: number): number[] {
	const values: number[] = [];
	for (let block = 0; values.length < dims; block++) {
		const digest = createHash("sha256").update(`${block}:${input}`).digest();
		for (let i = 0; i + 4 <= digest.length && values.length < dims; i += 4)
			values.push(digest.readInt32LE(i) / 2 ** 31);
	}
	const norm = Math.sqrt(values.reduce((sum, v) => sum + v * v, 0)) || 1;
	return values.map((v) => v / norm);
}

function embeddingsResponse(body: Json, model: string): Json {
	const raw = body.input;
	const inputs: unknown[] = Array.isArray(raw) && raw.every((x) => typeof x !== "number") ? raw : [raw];
	const dims = typeof body.dimensions === "number" && body.dimensions > 0 ? body.dimensions : EMBEDDING_DIMS;
	let tokens = 0;
	const data = inputs.map((input, index) => {
		tokens += typeof input === "string" ? words(input) : Array.isArray(input) ? input.length : 0;
		const vector = embedding(typeof input === "string" ? input : JSON.stringify(input), dims);
		const encoded =
			body.encoding_format === "base64" ? Buffer.from(new Float32Array(vector).buffer).toString("base64") : vector;
		return { object: "embedding", index, embedding: encoded };
	});
	return { object: "list", data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } };
}

/** Writes and waits until the bytes are handed to the socket (so dropping it afterwards does not lose them). */
function writeFlushed(res: ServerResponse, text: string): Promise<void> {
	return new Promise((resolve) => res.write(text, () => resolve()));
}

// ---------------------------------------------------------------- server

function headerRecord(req: IncomingMessage): Record<string, string> {
	const headers: Record<string, string> = {};
	for (const [name, value] of Object.entries(req.headers)) {
		if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(", ") : value;
	}
	return headers;
}

async function readBody(req: IncomingMessage): Promise<string> {
	const chunks: Buffer[] = [];
	let size = 0;
	for await (const chunk of req) {
		size += (chunk as Buffer).length;
		if (size > MAX_BODY_BYTES) throw new Error("request body too large");
		chunks.push(chunk as Buffer);
	}
	return Buffer.concat(chunks).toString("utf8");
}

export interface LlmStubOptions {
	/** 0 or absent: a free port. */
	port?: number;
	/** Keep {@link LlmStub.requests} (default true); benchmarks turn it off so memory stays flat. */
	record?: boolean;
}

/** Starts the stub on 127.0.0.1. */
export async function startLlmStub(options: LlmStubOptions = {}): Promise<LlmStub> {
	const requests: RecordedRequest[] = [];
	const scripts = new Map<string, Scenario[]>();
	const closing = new AbortController();
	const { promise: released, resolve: release } = Promise.withResolvers<void>();
	const untilClosed = new Promise<void>((resolve) => closing.signal.addEventListener("abort", () => resolve()));

	function next(model: string): Scenario {
		const scripted = scripts.get(model)?.shift();
		if (scripted !== undefined) return scripted;
		const known =
			(SCENARIOS as readonly string[]).includes(model) || model.startsWith("chunks:") || model.startsWith("tool-args:");
		return known ? (model as Scenario) : "ok";
	}

	async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
		const url = new URL(req.url ?? "/", "http://127.0.0.1");
		const text = await readBody(req);
		let body: unknown;
		try {
			body = text ? JSON.parse(text) : undefined;
		} catch {
			body = undefined;
		}
		const route = req.method === "POST" ? ROUTES.get(url.pathname) : undefined;
		const api: Api = route?.api ?? (url.pathname.startsWith("/anthropic/") ? "anthropic" : "openai");
		const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
		const xApiKey = req.headers["x-api-key"];
		const apiKey = api === "anthropic" ? (typeof xApiKey === "string" && xApiKey ? xApiKey : undefined) : bearer;
		const record: RecordedRequest = {
			method: req.method ?? "",
			path: url.pathname + url.search,
			headers: headerRecord(req),
			body,
			apiKey,
			scenario: undefined,
			time: Date.now(),
		};
		if (options.record !== false) requests.push(record);

		if (!route) return sendError(res, api, 404, `Invalid URL (${req.method} ${url.pathname})`);
		if (!apiKey && !route.keyless) {
			const message =
				api === "openai"
					? "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
					: "x-api-key header is required";
			return sendError(res, api, 401, message);
		}
		if (!isObject(body)) {
			const message =
				api === "openai" ? "We could not parse the JSON body of your request." : "There was an error parsing the body.";
			return sendError(res, api, 400, message);
		}
		const missing = missingField(route, body);
		if (missing) {
			return sendError(res, api, 400, missing.message, { param: missing.param, code: "missing_required_parameter" });
		}
		const model = String(body.model);
		const scenario = next(model);
		record.scenario = scenario;

		if (scenario === "hang") return;
		if (scenario === "slow-first-byte") await sleep(SLOW_FIRST_BYTE_MS, undefined, { signal: closing.signal });
		if (scenario === "held") await Promise.race([released, untilClosed]);
		if (scenario === "rate-limited") {
			const message =
				api === "openai"
					? `Rate limit reached for ${model} on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.`
					: "Number of request tokens has exceeded your per-minute rate limit.";
			return sendError(res, api, 429, message, { code: "rate_limit_exceeded", headers: { "retry-after": "1" } });
		}
		if (scenario === "error") {
			const message =
				api === "openai"
					? "The server had an error while processing your request. Sorry about that!"
					: "Internal server error";
			return sendError(res, api, 500, message);
		}

		const answer = answerFor(scenario, body, api);
		if (body.stream === true && route.kind === "chat") {
			const includeUsage = isObject(body.stream_options) && body.stream_options.include_usage === true;
			const frames = api === "openai" ? openaiFrames(answer, model, includeUsage) : anthropicFrames(answer, model);
			res.writeHead(200, {
				"content-type": "text/event-stream; charset=utf-8",
				"cache-control": "no-cache",
				...requestIdHeader(api, newId("req_")),
			});
			if (scenario === "broken-stream") {
				await writeFlushed(res, frames.slice(0, api === "openai" ? 3 : 5).join(""));
				res.destroy();
			} else {
				res.end(frames.join(""));
			}
			return;
		}

		const payload =
			route.kind === "embeddings"
				? embeddingsResponse(body, model)
				: api === "openai"
					? openaiCompletion(answer, model)
					: anthropicMessage(answer, model);
		if (scenario !== "broken-stream") return sendJson(res, api, 200, payload);
		const json = JSON.stringify(payload);
		res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
		await writeFlushed(res, json.slice(0, json.length >> 1));
		res.destroy();
	}

	const server = createServer((req, res) => {
		// A failed handler (client gone, body too large, stub closing) just drops the connection.
		handle(req, res).catch(() => res.destroy());
	});
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(options.port ?? 0, "127.0.0.1", () => {
			server.off("error", reject);
			resolve();
		});
	});
	const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
	let closed: Promise<void> | undefined;

	return {
		url,
		openaiBaseUrl: `${url}/openai/v1`,
		keylessOpenaiBaseUrl: `${url}/keyless/openai/v1`,
		anthropicBaseUrl: `${url}/anthropic`,
		requests,
		reset() {
			requests.length = 0;
			scripts.clear();
		},
		script(model, steps) {
			scripts.set(model, [...(scripts.get(model) ?? []), ...steps]);
		},
		release,
		close() {
			closed ??= new Promise<void>((resolve, reject) => {
				closing.abort();
				server.close((err) => (err ? reject(err) : resolve()));
				server.closeAllConnections();
			});
			return closed;
		},
	};
}
