/**
 * The exact-match LLM response cache, on the Workers Cache API (`caches.open("edgeway-llm")`, local
 * under Miniflare, per data centre when deployed). A key is the SHA-256 of the tenant, the kind and
 * the normalised request, and the tenant is also a segment of the key's URL, so two tenants can never
 * share an entry. Only successful answers are written (the router's job); the TTL is the tier's,
 * carried by `Cache-Control: max-age` on the stored response. A cache failure is a miss, never an error.
 *
 * Also here: replaying a completion as an OpenAI stream (a cached answer to a streaming request), and
 * assembling a stream into a completion (so a streamed answer can be cached for both kinds of request).
 */
import { z } from "zod";
import { log } from "../http";
import { canonicalJson, errorText, isRecord, sha256Hex } from "../lib";
import type {
	ChatCompletion,
	ChatCompletionChunk,
	ChatRequest,
	EmbeddingsRequest,
	EmbeddingsResponse,
	ToolCall,
} from "./types";

export const CACHE_NAME = "edgeway-llm";
/** Cache API keys must be http(s) URLs; this host is never fetched. */
const KEY_ORIGIN = "https://llm-cache.edgeway.internal";

export type CacheKind = "chat" | "embeddings";

/** What an entry holds: the answer and who served it (for the response headers and the usage record). */
export interface CachedAnswer {
	body: ChatCompletion | EmbeddingsResponse;
	provider: string;
	model: string;
	/** Milliseconds since the epoch. */
	storedAt: number;
}

// Entries are our own writes of typed values, but the cache is storage: check the shape before trusting it.
const CachedAnswerSchema = z.object({
	body: z.custom<ChatCompletion | EmbeddingsResponse>(
		(v) => isRecord(v) && (v.object === "chat.completion" || v.object === "list"),
	),
	provider: z.string().min(1),
	model: z.string().min(1),
	storedAt: z.number(),
});

/** Request fields that do not change the answer: how it is delivered, and who the end user is. */
const IGNORED_FIELDS = new Set(["stream", "stream_options", "user"]);

/**
 * The cache key (a URL) of a request: SHA-256 (hex) over the canonical JSON (keys sorted recursively)
 * of the tenant, the kind and the request with `stream`, `stream_options` and `user` removed and
 * `model` set to `model` (the alias or target the request resolved to).
 */
export async function cacheKey(
	tenantId: string,
	kind: CacheKind,
	model: string,
	request: ChatRequest | EmbeddingsRequest,
): Promise<string> {
	const normalised: Record<string, unknown> = { model };
	for (const [field, value] of Object.entries(request)) {
		if (field !== "model" && !IGNORED_FIELDS.has(field)) normalised[field] = value;
	}
	const hash = sha256Hex(canonicalJson({ tenantId, kind, request: normalised }));
	return `${KEY_ORIGIN}/${encodeURIComponent(tenantId)}/${kind}/${hash}`;
}

// The opened cache, not the promise of it: no request awaits a promise another request created.
let opened: Cache | undefined;

async function llmCache(): Promise<Cache> {
	opened ??= await caches.open(CACHE_NAME);
	return opened;
}

/** The entry under `key`, or null on a miss, an expired entry, an unreadable one or a cache failure. */
export async function readCache(key: string): Promise<CachedAnswer | null> {
	try {
		const res = await (await llmCache()).match(new Request(key));
		if (!res) return null;
		const parsed = CachedAnswerSchema.safeParse(await res.json());
		if (!parsed.success) {
			log("warn", "llm cache entry unreadable", { key });
			return null;
		}
		return parsed.data;
	} catch (err) {
		log("warn", "llm cache read failed", { key, error: errorText(err) });
		return null;
	}
}

/**
 * Stores a successful answer under `key` for `ttlS` seconds; `ttlS` ≤ 0 stores nothing. Never throws:
 * a failure is logged (without the content) and the answer simply is not cached.
 */
export async function writeCache(key: string, value: Omit<CachedAnswer, "storedAt">, ttlS: number): Promise<void> {
	const maxAge = Math.floor(ttlS);
	if (!(maxAge > 0)) return;
	try {
		const entry: CachedAnswer = { ...value, storedAt: Date.now() };
		// No Set-Cookie and no `private` / `no-store`: the Cache API would silently refuse the entry.
		const res = new Response(JSON.stringify(entry), {
			headers: { "content-type": "application/json", "cache-control": `max-age=${maxAge}` },
		});
		await (await llmCache()).put(new Request(key), res);
	} catch (err) {
		log("warn", "llm cache write failed", { key, error: errorText(err) });
	}
}

/** Most pieces a replayed text is cut into, and the smallest piece worth a chunk of its own. */
const MAX_PIECES = 8;
const MIN_PIECE_CHARS = 32;

/** Cuts `text` into a few pieces, never between the two halves of a surrogate pair. */
function pieces(text: string): string[] {
	if (text.length <= MIN_PIECE_CHARS) return [text];
	const size = Math.max(MIN_PIECE_CHARS, Math.ceil(text.length / MAX_PIECES));
	const out: string[] = [];
	let start = 0;
	while (start < text.length) {
		let end = Math.min(start + size, text.length);
		const code = text.charCodeAt(end - 1);
		if (end < text.length && code >= 0xd800 && code <= 0xdbff) end++;
		out.push(text.slice(start, end));
		start = end;
	}
	return out;
}

/**
 * Replays a completion as an OpenAI stream, per choice: a role chunk, the content in a few chunks,
 * each tool call (id, type and name in its first delta, the arguments after), a finish chunk; then,
 * when the completion has usage, a usage chunk (`choices: []`). The caller decides whether the client
 * gets the usage chunk (`stream_options.include_usage`).
 */
export function completionToChunks(completion: ChatCompletion): ChatCompletionChunk[] {
	const base = { id: completion.id, object: "chat.completion.chunk" as const, created: completion.created };
	const chunk = (choices: ChatCompletionChunk["choices"]): ChatCompletionChunk => ({
		...base,
		model: completion.model,
		choices,
	});
	const out: ChatCompletionChunk[] = [];
	for (const choice of completion.choices) {
		const { index, message } = choice;
		const delta = (d: ChatCompletionChunk["choices"][number]["delta"]) =>
			chunk([{ index, delta: d, finish_reason: null }]);
		// An empty string in the role chunk marks text content, so "" and null both survive a round trip.
		out.push(delta(typeof message.content === "string" ? { role: "assistant", content: "" } : { role: "assistant" }));
		if (message.content) {
			for (const piece of pieces(message.content)) out.push(delta({ content: piece }));
		}
		(message.tool_calls ?? []).forEach((call, i) => {
			out.push(
				delta({
					tool_calls: [
						{ index: i, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } },
					],
				}),
			);
			if (call.function.arguments) {
				for (const piece of pieces(call.function.arguments)) {
					out.push(delta({ tool_calls: [{ index: i, function: { arguments: piece } }] }));
				}
			}
		});
		out.push(chunk([{ index, delta: {}, finish_reason: choice.finish_reason }]));
	}
	if (completion.usage) out.push({ ...chunk([]), usage: completion.usage });
	return out;
}

interface ChoiceDraft {
	content: string | null;
	calls: Map<number, { id: string; name: string; arguments: string }>;
	finishReason: ChatCompletion["choices"][number]["finish_reason"];
}

/**
 * Assembles a streamed answer into the completion it stands for: content concatenated, tool call
 * deltas merged by their index, the last finish reason, the usage of the last chunk that carried one.
 * Throws on an empty list (there is no answer to assemble).
 */
export function chunksToCompletion(chunks: ChatCompletionChunk[]): ChatCompletion {
	const first = chunks[0];
	if (!first) throw new RangeError("no chunks to assemble");
	const drafts = new Map<number, ChoiceDraft>();
	let usage: ChatCompletion["usage"];
	for (const c of chunks) {
		if (c.usage) usage = c.usage;
		for (const choice of c.choices) {
			let draft = drafts.get(choice.index);
			if (!draft) {
				draft = { content: null, calls: new Map(), finishReason: null };
				drafts.set(choice.index, draft);
			}
			const { content, tool_calls } = choice.delta;
			if (typeof content === "string") draft.content = (draft.content ?? "") + content;
			for (const delta of tool_calls ?? []) {
				let call = draft.calls.get(delta.index);
				if (!call) {
					call = { id: "", name: "", arguments: "" };
					draft.calls.set(delta.index, call);
				}
				if (delta.id) call.id = delta.id;
				if (delta.function?.name) call.name = delta.function.name;
				if (delta.function?.arguments) call.arguments += delta.function.arguments;
			}
			if (choice.finish_reason) draft.finishReason = choice.finish_reason;
		}
	}
	const choices = [...drafts.entries()]
		.sort(([a], [b]) => a - b)
		.map(([index, draft]) => {
			const toolCalls: ToolCall[] = [...draft.calls.entries()]
				.sort(([a], [b]) => a - b)
				.map(([, call]) => ({
					id: call.id,
					type: "function" as const,
					function: { name: call.name, arguments: call.arguments },
				}));
			return {
				index,
				message: {
					role: "assistant" as const,
					content: draft.content,
					...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
				},
				finish_reason: draft.finishReason,
			};
		});
	return {
		id: first.id,
		object: "chat.completion",
		created: first.created,
		model: first.model,
		choices,
		...(usage ? { usage } : {}),
	};
}
