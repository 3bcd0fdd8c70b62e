/**
 * What every provider implements. A provider speaks its own API and translates at its edges: it is
 * given an OpenAI-shaped request for one upstream model and answers OpenAI shapes. It knows nothing of
 * routing, retries, breakers, budgets or caching; those belong to the router (src/llm/router.ts).
 */
import { errorMessage } from "../../lib";
import type { ChatCompletion, ChatCompletionChunk, ChatRequest, EmbeddingsRequest, EmbeddingsResponse } from "../types";

export const PROVIDER_KINDS = ["openai", "anthropic", "openai-compatible", "workers-ai"] as const;
export type ProviderKind = (typeof PROVIDER_KINDS)[number];

export interface ProviderCall<R> {
	/** The upstream model id (the part after `provider/` in a target). */
	model: string;
	/** Validated OpenAI-shaped request; `model` and `stream` in it are ignored in favour of the call's. */
	request: R;
	/** The key to use: the tenant's own (BYOK) or the gateway's. Absent for keyless providers. */
	apiKey?: string;
	/** Aborted on the attempt's timeout, the request's deadline, or the client going away. */
	signal: AbortSignal;
	traceparent?: string;
	/**
	 * Called once the upstream has accepted the request (a 2xx status), before the body is read: the
	 * router stops the attempt's timer there for answers that are not streamed, so a long answer is
	 * not mistaken for a dead provider. Providers without a response head (Workers AI) never call it.
	 */
	onResponse?: () => void;
}

/**
 * A started stream: OpenAI chunks in order; the last carries `usage` when the provider reports it.
 * Ending the iteration early (`return()`) cancels the upstream body.
 */
export type ChatStream = AsyncIterable<ChatCompletionChunk>;

export interface Provider {
	readonly name: string;
	readonly kind: ProviderKind;
	chat(call: ProviderCall<ChatRequest>): Promise<ChatCompletion>;
	/**
	 * Starts a streamed completion. Resolves once the upstream has accepted the request (a 2xx status);
	 * an upstream refusal rejects with a {@link ProviderError}, so the router may still fall back. An
	 * error after that surfaces from the iterator (a `ProviderError` of kind `stream`).
	 */
	chatStream(call: ProviderCall<ChatRequest>): Promise<ChatStream>;
	/** Absent when the provider has no embeddings API (the router then skips its targets). */
	embed?(call: ProviderCall<EmbeddingsRequest>): Promise<EmbeddingsResponse>;
}

/**
 * Why a provider call failed:
 *  - `http`: the upstream answered with a non-2xx status (`status`, maybe `retryAfterMs`);
 *  - `timeout`: the call's signal fired before an answer;
 *  - `connection`: the request never got an answer (DNS, refused, reset);
 *  - `protocol`: the upstream answered 2xx with something this provider cannot read;
 *  - `stream`: a started stream broke off or carried an error event;
 *  - `unsupported`: this provider cannot take this request (it cannot be translated, or the model cannot do
 *    what was asked): status 400; the router tries the next target and answers 400 only if none can.
 */
export type ProviderErrorKind = "http" | "timeout" | "connection" | "protocol" | "stream" | "unsupported";

export class ProviderError extends Error {
	readonly kind: ProviderErrorKind;
	readonly status: number | undefined;
	readonly retryAfterMs: number | undefined;
	/** The upstream's own error message, if any, trimmed. Shown to clients for 4xx (it is about their request). */
	readonly upstreamMessage: string | undefined;

	constructor(
		kind: ProviderErrorKind,
		message: string,
		options: { status?: number; retryAfterMs?: number; upstreamMessage?: string } = {},
	) {
		super(message);
		this.name = "ProviderError";
		this.kind = kind;
		this.status = options.status;
		this.retryAfterMs = options.retryAfterMs;
		this.upstreamMessage = options.upstreamMessage;
	}
}

/** `Retry-After` (seconds or an HTTP date) in milliseconds; `undefined` when absent or unreadable. */
export function retryAfterMs(value: string | null, now = Date.now()): number | undefined {
	if (!value) return undefined;
	const trimmed = value.trim();
	if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
	const at = Date.parse(trimmed);
	return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * Turns a non-2xx upstream response into a ProviderError, reading at most 4 KiB of its body for the
 * upstream's message (OpenAI `{error:{message}}`, Anthropic `{error:{message}}`, Workers AI `{errors:[…]}`).
 */
export async function httpError(response: Response, provider: string): Promise<ProviderError> {
	let upstreamMessage: string | undefined;
	try {
		const text = (await response.text()).slice(0, 4096);
		const body = JSON.parse(text) as { error?: { message?: unknown } | string; errors?: Array<{ message?: unknown }> };
		const message =
			typeof body.error === "string"
				? body.error
				: typeof body.error?.message === "string"
					? body.error.message
					: typeof body.errors?.[0]?.message === "string"
						? body.errors[0].message
						: undefined;
		upstreamMessage = message?.slice(0, 500);
	} catch {
		// Not JSON: the status says enough.
	}
	return new ProviderError("http", `${provider} answered ${response.status}`, {
		status: response.status,
		retryAfterMs: retryAfterMs(response.headers.get("retry-after")),
		upstreamMessage,
	});
}

/** A fetch failure as a ProviderError: `timeout` if the signal fired, otherwise `connection`. */
export function fetchError(err: unknown, signal: AbortSignal, provider: string): ProviderError {
	if (err instanceof ProviderError) return err;
	if (signal.aborted) return new ProviderError("timeout", `${provider} did not answer in time`);
	return new ProviderError("connection", `${provider} could not be reached: ${errorMessage(err)}`);
}
