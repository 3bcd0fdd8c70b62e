/**
 * `POST /v1/chat/completions`: input guardrails → cache → budget reservation → routing → output
 * guardrails → answer (JSON, or a stream) → settlement, usage record and cache write in the background.
 *
 * Streams. The router hands over a stream only once its first chunk is in hand, so every failure
 * before that falls back; after it, nothing is retried. Output guardrails scan the streamed text with
 * a bounded look-behind (StreamGuard): a block ends the stream with `finish_reason: "content_filter"`
 * and an error event, and is audited. Usage is always asked of the upstream; the usage chunk reaches
 * the client only if it asked (`stream_options.include_usage`). A stream that goes silent for
 * `streamIdleTimeoutMs` is cut. Tool-call arguments are scanned too, per call, in streams and in JSON answers.
 */
import type { Context } from "hono";
import { type AppEnv, log } from "../http";
import { cacheKey, chunksToCompletion, completionToChunks, writeCache } from "./cache";
import { checkChatInput, checkChatOutput, compileGuardrails, StreamGuard } from "./guardrails";
import {
	afterResponse,
	auditBlock,
	cacheModel,
	contentBlocked,
	lookupAndReserve,
	narrowedProviders,
	type Plane,
	planeFor,
	providerCall,
	refuseInput,
	servedHeaders,
	settle,
	statusOf,
} from "./plane";
import { ProviderError } from "./providers";
import { planTargets, route, type Served } from "./router";
import { SSE_DONE, sseData } from "./sse";
import type { ChatCompletion, ChatCompletionChunk, ChatRequest, Usage } from "./types";
import { estimateCompletionTokens, estimatePromptTokens } from "./usage";

const SSE_HEADERS = { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" };

export async function chatCompletions(c: Context<AppEnv>, body: ChatRequest): Promise<Response> {
	const plane = planeFor(c);
	const { cfg } = plane;
	const narrowed = narrowedProviders(c);
	const targets = planTargets(cfg, plane.tier.models, body.model, "chat", { providers: narrowed });

	const input = checkChatInput(body, cfg.guardrails);
	if (input.blocked) await refuseInput(plane, "chat", body.model, input.blocked.check);
	const stream = input.request.stream === true;
	const wantsUsage = stream && input.request.stream_options?.include_usage === true;
	// What is reserved is what may be spent: without a cap of its own, the request gets the default one.
	const maxOutput = input.request.max_completion_tokens ?? input.request.max_tokens ?? cfg.defaultMaxOutputTokens;
	// (`max_completion_tokens`: the field every OpenAI model accepts; the providers map it where needed.)
	const request: ChatRequest =
		input.request.max_completion_tokens || input.request.max_tokens
			? input.request
			: { ...input.request, max_completion_tokens: maxOutput };

	const key =
		plane.cacheTtlS > 0
			? await cacheKey(plane.principal.tenantId, "chat", cacheModel(body.model, narrowed), request)
			: null;
	const promptTokens = estimatePromptTokens(request);
	const { hit, reservation } = await lookupAndReserve(plane, key, targets, promptTokens, maxOutput);
	if (hit && hit.body.object === "chat.completion") {
		const completion = hit.body as ChatCompletion;
		const target = { provider: hit.provider, model: hit.model, weight: 1, priority: 0 };
		settle(plane, reservation, {
			operation: "chat",
			requested: body.model,
			target,
			promptTokens: completion.usage?.prompt_tokens ?? 0,
			completionTokens: completion.usage?.completion_tokens ?? 0,
			estimated: !completion.usage,
			status: 200,
			cacheHit: true,
		});
		const headers = servedHeaders(target, 0, "HIT");
		if (!stream) return c.json(completion, 200, headers);
		const chunks = completionToChunks(completion).filter((ch) => wantsUsage || ch.choices.length > 0);
		return c.body(sseBody(chunks), 200, { ...headers, ...SSE_HEADERS });
	}

	const failed = (err: unknown, served?: { target: Served<unknown>["target"]; attempts: number; byok: boolean }) =>
		settle(plane, reservation, {
			operation: "chat",
			requested: body.model,
			status: statusOf(err),
			...(served ? { target: served.target, byok: served.byok, attempts: served.attempts } : {}),
		});

	if (!stream) {
		let served: Served<ChatCompletion> | undefined;
		let settled = false;
		try {
			served = await route(plane.routeEnv, targets, (a) => a.provider.chat(providerCall(plane, a, request, "whole")));
			const usage = served.value.usage;
			const outcome = {
				operation: "chat" as const,
				requested: body.model,
				target: served.target,
				promptTokens: usage?.prompt_tokens ?? promptTokens,
				completionTokens: usage?.completion_tokens ?? estimateCompletionTokens(served.value),
				estimated: !usage,
				status: 200,
				cacheHit: false,
				byok: served.byok,
				attempts: served.attempts,
			};
			const output = checkChatOutput(served.value, cfg.guardrails.output);
			if (output.blocked) {
				settle(plane, reservation, { ...outcome, status: 400 });
				settled = true;
				await auditBlock(plane, "output", output.blocked.check, body.model);
				throw contentBlocked("output", output.blocked.check);
			}
			settle(plane, reservation, outcome);
			settled = true;
			const { target } = served;
			if (key) {
				afterResponse(c, () =>
					writeCache(key, { body: output.completion, provider: target.provider, model: target.model }, plane.cacheTtlS),
				);
			}
			return c.json(output.completion, 200, servedHeaders(target, served.attempts, plane.cacheStatus));
		} catch (err) {
			if (!settled) failed(err, served);
			throw err;
		}
	}

	let served: Served<{ first: IteratorResult<ChatCompletionChunk>; rest: AsyncIterator<ChatCompletionChunk> }>;
	try {
		served = await route(plane.routeEnv, targets, async (a) => {
			const chunks = await a.provider.chatStream(providerCall(plane, a, request, "stream"));
			const rest = chunks[Symbol.asyncIterator]();
			// The first chunk decides: a failure before it may still fall back. Raced against the attempt's
			// signal, since a provider's iterator need not watch it.
			return { first: await untilAborted(rest.next(), a.signal), rest };
		});
	} catch (err) {
		failed(err);
		throw err;
	}
	return c.body(
		streamAnswer(plane, served, { requested: body.model, wantsUsage, promptTokens, reservation, key }),
		200,
		{ ...servedHeaders(served.target, served.attempts, plane.cacheStatus), ...SSE_HEADERS },
	);
}

/** `promise`, or a timeout ProviderError as soon as `signal` fires. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
	if (signal.aborted) return Promise.reject(new ProviderError("timeout", "the attempt was aborted"));
	return new Promise<T>((resolve, reject) => {
		const onAbort = () => reject(new ProviderError("timeout", "no first chunk in time"));
		signal.addEventListener("abort", onAbort, { once: true });
		promise.then(
			(value) => {
				signal.removeEventListener("abort", onAbort);
				resolve(value);
			},
			(err: unknown) => {
				signal.removeEventListener("abort", onAbort);
				reject(err);
			},
		);
	});
}

function sseBody(chunks: readonly ChatCompletionChunk[]): ReadableStream<Uint8Array> {
	return new ReadableStream({
		start(controller) {
			for (const chunk of chunks) controller.enqueue(sseData(chunk));
			controller.enqueue(SSE_DONE);
			controller.close();
		},
	});
}

interface StreamState {
	requested: string;
	wantsUsage: boolean;
	promptTokens: number;
	reservation: Parameters<typeof settle>[1];
	key: string | null;
}

type Upstream = Served<{ first: IteratorResult<ChatCompletionChunk>; rest: AsyncIterator<ChatCompletionChunk> }>;
type Controller = ReadableStreamDefaultController<Uint8Array>;

/**
 * The client's event stream over a started upstream stream. Output guardrails run on the content and
 * on each tool call's arguments (a StreamGuard per tool-call index). It ends in exactly one way —
 * `[DONE]`, a block, an error event, or the client going away — and settles exactly once.
 */
function streamAnswer(plane: Plane, served: Upstream, s: StreamState): ReadableStream<Uint8Array> {
	const { cfg } = plane;
	const compiled = cfg.guardrails.output.length > 0 ? compileGuardrails(cfg.guardrails.output) : null;
	// Fresh guards after each finish: a server that sends more after a finish is scanned too.
	let content = compiled ? new StreamGuard(compiled) : null;
	const toolArgs = new Map<number, StreamGuard>();
	const sent: ChatCompletionChunk[] = [];
	let pending: IteratorResult<ChatCompletionChunk> | null = served.value.first;
	let template: ChatCompletionChunk | null = null;
	let usage: Usage | null = null;
	let outputChars = 0;
	let ended = false;
	let cancelled = false;

	const finish = (status: number) => {
		if (ended) return;
		ended = true;
		settle(plane, s.reservation, {
			operation: "chat",
			requested: s.requested,
			target: served.target,
			promptTokens: usage?.prompt_tokens ?? s.promptTokens,
			completionTokens: usage?.completion_tokens ?? Math.ceil(outputChars / 4),
			estimated: !usage,
			status,
			cacheHit: false,
			byok: served.byok,
			attempts: served.attempts,
		});
		if (status !== 200 || !s.key || sent.length === 0) return;
		const like = sent[0] as ChatCompletionChunk;
		const answer = chunksToCompletion(usage ? [...sent, { ...like, choices: [], usage }] : sent);
		// What was streamed went through the stream guards; the JSON checks run once more before it is stored.
		const output = checkChatOutput(answer, cfg.guardrails.output);
		if (output.blocked) return;
		const value = { body: output.completion, provider: served.target.provider, model: served.target.model };
		const key = s.key;
		afterResponse(plane.c, () => writeCache(key, value, plane.cacheTtlS));
	};

	/** The next upstream chunk, or a stream error after `streamIdleTimeoutMs` of silence. */
	const next = async (): Promise<IteratorResult<ChatCompletionChunk>> => {
		if (pending) {
			const p = pending;
			pending = null;
			return p;
		}
		let timer: ReturnType<typeof setTimeout> | undefined;
		const idle = new Promise<never>((_, reject) => {
			const ms = cfg.routing.streamIdleTimeoutMs;
			timer = setTimeout(() => reject(new ProviderError("stream", `no chunk for ${ms} ms`)), ms);
		});
		try {
			return await Promise.race([served.value.rest.next(), idle]);
		} finally {
			clearTimeout(timer);
		}
	};

	const emit = (controller: Controller, chunk: ChatCompletionChunk) => {
		if (s.key) sent.push(chunk);
		controller.enqueue(sseData(chunk));
	};

	const stop = () => {
		served.abort();
		void served.value.rest.return?.().catch(() => {});
	};

	const block = async (controller: Controller, like: ChatCompletionChunk, check: string) => {
		stop();
		controller.enqueue(
			sseData({ ...like, usage: undefined, choices: [{ index: 0, delta: {}, finish_reason: "content_filter" }] }),
		);
		const message = contentBlocked("output", check).message;
		controller.enqueue(
			sseData({ error: { message, type: "invalid_request_error", param: null, code: "content_blocked" } }),
		);
		controller.close();
		finish(400);
		await auditBlock(plane, "output", check, s.requested);
	};

	/**
	 * Scans one chunk's content and tool-call arguments; the delta to send (null: nothing to send yet)
	 * or the check that blocked. With `final`, every guard is ended and what it held is released.
	 */
	const scan = (delta: ChatCompletionChunk["choices"][number]["delta"], final: boolean) => {
		outputChars += delta.content?.length ?? 0;
		for (const call of delta.tool_calls ?? []) outputChars += call.function?.arguments?.length ?? 0;
		if (!compiled || !content) return { delta, blocked: null };
		const out: typeof delta = { ...delta };
		if (typeof delta.content === "string" && delta.content.length > 0) {
			const step = content.push(delta.content);
			if (step.blocked) return { delta: null, blocked: step.blocked.check };
			out.content = step.emit;
		}
		if (delta.tool_calls) {
			out.tool_calls = [];
			for (const call of delta.tool_calls) {
				let guard = toolArgs.get(call.index);
				if (!guard) {
					guard = new StreamGuard(compiled);
					toolArgs.set(call.index, guard);
				}
				const args = call.function?.arguments;
				if (!args) {
					out.tool_calls.push(call);
					continue;
				}
				const step = guard.push(args);
				if (step.blocked) return { delta: null, blocked: step.blocked.check };
				out.tool_calls.push({ ...call, function: { ...call.function, arguments: step.emit } });
			}
		}
		if (final) {
			const tail = content.end();
			if (tail.blocked) return { delta: null, blocked: tail.blocked.check };
			out.content = (out.content ?? "") + tail.emit;
			for (const [index, guard] of toolArgs) {
				const rest = guard.end();
				if (rest.blocked) return { delta: null, blocked: rest.blocked.check };
				if (rest.emit) out.tool_calls = [...(out.tool_calls ?? []), { index, function: { arguments: rest.emit } }];
			}
			content = new StreamGuard(compiled);
			toolArgs.clear();
		}
		if (out.content === "" && !out.role) delete out.content;
		if (out.tool_calls?.length === 0) delete out.tool_calls;
		return { delta: out, blocked: null };
	};

	/** Reads one upstream chunk and forwards what it yields. False when nothing went out (read another). */
	const step = async (controller: Controller): Promise<boolean> => {
		try {
			const result = await next();
			if (cancelled) return true;
			if (result.done) {
				if (template) {
					// Anything still held (an upstream that sent no finish reason) goes out, or blocks.
					const tail = scan({}, true);
					if (tail.blocked) {
						await block(controller, template, tail.blocked);
						return true;
					}
					if (tail.delta && Object.keys(tail.delta).length > 0) {
						emit(controller, {
							...template,
							usage: undefined,
							choices: [{ index: 0, delta: tail.delta, finish_reason: null }],
						});
					}
					if (s.wantsUsage && usage) controller.enqueue(sseData({ ...template, choices: [], usage }));
				}
				controller.enqueue(SSE_DONE);
				controller.close();
				finish(200);
				return true;
			}
			const chunk = result.value;
			template ??= chunk;
			if (chunk.usage) usage = chunk.usage;
			const choice = chunk.choices[0];
			if (!choice) return false; // the usage chunk: sent at the end, if asked for
			const final = choice.finish_reason !== null && choice.finish_reason !== undefined;
			const scanned = scan(choice.delta, final);
			if (scanned.blocked) {
				await block(controller, chunk, scanned.blocked);
				return true;
			}
			const delta = scanned.delta ?? {};
			if (!final && Object.keys(delta).length === 0) return false;
			emit(controller, { ...chunk, usage: undefined, choices: [{ ...choice, delta }] });
			return true;
		} catch (err) {
			if (cancelled) return true;
			// Only the provider's failures teach its breakers; a bug of ours is not its outage.
			if (err instanceof ProviderError) served.recordFailure();
			stop();
			log("warn", "llm stream failed after it started", {
				provider: served.target.provider,
				model: served.target.model,
				reason: err instanceof Error ? err.message : String(err),
				requestId: plane.c.var.requestId,
			});
			const error = {
				message: "The provider's stream broke off.",
				type: "api_error",
				param: null,
				code: "upstream_error",
			};
			controller.enqueue(sseData({ error }));
			controller.close();
			finish(502);
			return true;
		}
	};

	return new ReadableStream<Uint8Array>({
		async pull(controller) {
			// A pull that enqueues nothing is not called again: keep reading until something goes out.
			while (!(await step(controller))) {}
		},
		cancel() {
			// The client went away: not the provider's fault, so no breaker hears of it.
			cancelled = true;
			finish(499);
			stop();
		},
	});
}
