/**
 * The client's event stream over a started upstream stream: each upstream chunk read (ChunkReader),
 * guarded (DeltaGuard) and sent on, then one ending, then the settlement.
 */
import { ApiError, log } from "../../http";
import { errorText } from "../../lib";
import { chunksToCompletion } from "../cache";
import { openAiErrorBody } from "../errors";
import { checkChatOutput } from "../guardrails";
import type { Plane } from "../plane";
import { ProviderError } from "../providers";
import { auditBlock, type Bill, contentBlocked, storeAnswer } from "../settlement";
import { SSE_DONE, sseData } from "../sse";
import type { ChatCompletionChunk, Usage } from "../types";
import { type Delta, type DeltaGuard, deltaGuard, type Scanned } from "./delta-guard";
import { ChunkReader, type Upstream } from "./upstream";

export interface StreamOptions {
	/** The client asked for the usage chunk (`stream_options.include_usage`). */
	wantsUsage: boolean;
	/** The prompt estimate, for the usage record when the upstream reports no usage. */
	promptTokens: number;
	/** Where a complete answer is cached; null when it is not. */
	key: string | null;
}

type Controller = ReadableStreamDefaultController<Uint8Array>;

/**
 * The client's event stream. It ends in exactly one way — `[DONE]`, a block, an error event, or the
 * client going away — and settles exactly once.
 */
export function streamAnswer(
	plane: Plane,
	bill: Bill,
	upstream: Upstream,
	options: StreamOptions,
): ReadableStream<Uint8Array> {
	const answer = new StreamedAnswer(plane, bill, upstream, options);
	return new ReadableStream<Uint8Array>({
		async pull(controller) {
			// A pull that enqueues nothing is not called again: keep reading until something goes out.
			while (!(await answer.step(controller))) {}
		},
		cancel() {
			answer.cancel();
		},
	});
}

/** Characters of text and tool-call arguments in a delta: the completion estimate when the upstream reports no usage. */
function outputChars(delta: Delta): number {
	let n = delta.content?.length ?? 0;
	for (const call of delta.tool_calls ?? []) n += call.function?.arguments?.length ?? 0;
	return n;
}

class StreamedAnswer {
	readonly #plane: Plane;
	readonly #bill: Bill;
	readonly #upstream: Upstream;
	readonly #options: StreamOptions;
	readonly #reader: ChunkReader;
	readonly #guard: DeltaGuard | null;
	/** What went out, kept only when the answer is to be cached. */
	readonly #sent: ChatCompletionChunk[] = [];
	/** The first chunk: the id, model and created time of the chunks the gateway writes itself. */
	#template: ChatCompletionChunk | null = null;
	#usage: Usage | null = null;
	#outputChars = 0;
	#ended = false;
	#cancelled = false;

	constructor(plane: Plane, bill: Bill, upstream: Upstream, options: StreamOptions) {
		this.#plane = plane;
		this.#bill = bill;
		this.#upstream = upstream;
		this.#options = options;
		this.#reader = new ChunkReader(upstream, plane.cfg.routing.streamIdleTimeoutMs);
		this.#guard = deltaGuard(plane.cfg.guardrails.output);
	}

	/** Reads one upstream chunk and forwards what it yields. False when nothing went out (read another). */
	async step(out: Controller): Promise<boolean> {
		try {
			const result = await this.#reader.next();
			if (this.#cancelled) return true;
			if (result.done) {
				await this.#complete(out);
				return true;
			}
			return await this.#forward(out, result.value);
		} catch (err) {
			if (this.#cancelled) return true;
			this.#fail(out, err);
			return true;
		}
	}

	/** The client went away: not the provider's fault, so no breaker hears of it. */
	cancel(): void {
		this.#cancelled = true;
		this.#finish(499);
		this.#reader.stop();
	}

	/** One upstream chunk: scanned and sent on (or held back, or blocked). False when nothing went out. */
	async #forward(out: Controller, chunk: ChatCompletionChunk): Promise<boolean> {
		this.#template ??= chunk;
		if (chunk.usage) this.#usage = chunk.usage;
		const choice = chunk.choices[0];
		if (!choice) return false; // the usage chunk: sent at the end, if asked for
		const final = choice.finish_reason !== null && choice.finish_reason !== undefined;
		const scanned = this.#scan(choice.delta, final);
		if (scanned.blocked !== null) {
			await this.#block(out, chunk, scanned.blocked);
			return true;
		}
		if (!final && Object.keys(scanned.delta).length === 0) return false;
		this.#emit(out, { ...chunk, usage: undefined, choices: [{ ...choice, delta: scanned.delta }] });
		return true;
	}

	/** The upstream ended: what the guards still hold goes out (or blocks), the usage chunk if asked for, then `[DONE]`. */
	async #complete(out: Controller): Promise<void> {
		const template = this.#template;
		if (template) {
			// Anything still held (an upstream that sent no finish reason) goes out, or blocks.
			const tail = this.#scan({}, true);
			if (tail.blocked !== null) {
				await this.#block(out, template, tail.blocked);
				return;
			}
			if (Object.keys(tail.delta).length > 0) {
				this.#emit(out, {
					...template,
					usage: undefined,
					choices: [{ index: 0, delta: tail.delta, finish_reason: null }],
				});
			}
			const usage = this.#usage;
			if (this.#options.wantsUsage && usage) out.enqueue(sseData({ ...template, choices: [], usage }));
		}
		out.enqueue(SSE_DONE);
		out.close();
		this.#finish(200);
	}

	/** A block: the upstream is stopped, the choice finishes with `content_filter`, an error event ends the stream. */
	async #block(out: Controller, like: ChatCompletionChunk, check: string): Promise<void> {
		this.#reader.stop();
		out.enqueue(
			sseData({ ...like, usage: undefined, choices: [{ index: 0, delta: {}, finish_reason: "content_filter" }] }),
		);
		this.#end(out, contentBlocked("output", check));
		this.#finish(400);
		await auditBlock(this.#plane, "output", check, this.#bill.requested);
	}

	/** The upstream broke off after it started: nothing is retried, an error event ends the stream. */
	#fail(out: Controller, err: unknown): void {
		// Only the provider's failures teach its breakers; a bug of ours is not its outage.
		if (err instanceof ProviderError) this.#upstream.recordFailure();
		this.#reader.stop();
		const { target } = this.#upstream;
		log("warn", "llm stream failed after it started", {
			provider: target.provider,
			model: target.model,
			reason: errorText(err),
			requestId: this.#plane.c.get("requestId"),
		});
		this.#end(out, new ApiError("upstream-error", "The provider's stream broke off."));
		this.#finish(502);
	}

	#scan(delta: Delta, final: boolean): Scanned {
		this.#outputChars += outputChars(delta);
		return this.#guard ? this.#guard.scan(delta, final) : { delta, blocked: null };
	}

	#emit(out: Controller, chunk: ChatCompletionChunk): void {
		if (this.#options.key) this.#sent.push(chunk);
		out.enqueue(sseData(chunk));
	}

	/** The error event that ends a stream, in the body every error on the OpenAI routes has. */
	#end(out: Controller, error: ApiError): void {
		out.enqueue(sseData(openAiErrorBody(error)));
		out.close();
	}

	/** Settles the request, and caches a complete answer that passes the output checks once more. */
	#finish(status: number): void {
		if (this.#ended) return;
		this.#ended = true;
		const upstream = this.#upstream;
		const usage = this.#usage;
		this.#bill.settle({
			target: upstream.target,
			promptTokens: usage?.prompt_tokens ?? this.#options.promptTokens,
			completionTokens: usage?.completion_tokens ?? Math.ceil(this.#outputChars / 4),
			estimated: !usage,
			status,
			cacheHit: false,
			byok: upstream.byok,
			attempts: upstream.attempts,
		});
		const { key } = this.#options;
		const sent = this.#sent;
		const like = sent[0];
		if (status !== 200 || !key || !like) return;
		const answer = chunksToCompletion(usage ? [...sent, { ...like, choices: [], usage }] : sent);
		// What was streamed went through the stream guards; the JSON checks run once more before it is stored.
		const output = checkChatOutput(answer, this.#plane.cfg.guardrails.output);
		if (!output.blocked) storeAnswer(this.#plane, key, output.completion, upstream.target);
	}
}
