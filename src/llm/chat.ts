/**
 * `POST /v1/chat/completions`: input guardrails → cache → budget reservation → routing → output
 * guardrails → answer (JSON, or a stream) → settlement, usage record and cache write in the background.
 *
 * Streams. The router hands over a stream only once its first chunk is in hand, so every failure
 * before that falls back; after it, nothing is retried. Output guardrails scan the streamed text with
 * a bounded look-behind (StreamGuard): a block ends the stream with `finish_reason: "content_filter"`
 * and an error event, and is audited. Usage is always asked of the upstream; the usage chunk reaches
 * the client only if it asked (`stream_options.include_usage`). A stream that goes silent for
 * `streamIdleTimeoutMs` is cut. Tool-call arguments are scanned in JSON answers, not in streams.
 */
import type { Context } from "hono";
import { ApiError, log } from "../http";
import { cacheKey, chunksToCompletion, completionToChunks, readCache, writeCache } from "./cache";
import { checkChatInput, checkChatOutput, compileGuardrails, StreamGuard } from "./guardrails";
import {
	auditBlock,
	contentBlocked,
	type LlmEnv,
	narrowedProviders,
	type Plane,
	planeFor,
	refuseInput,
	reserveBudget,
	servedHeaders,
	settle,
} from "./plane";
import { ProviderError } from "./providers";
import { planTargets, route, type Served } from "./router";
import { SSE_DONE, sseData } from "./sse";
import type { ChatCompletion, ChatCompletionChunk, ChatRequest, Usage } from "./types";
import { estimateCompletionTokens, estimatePromptTokens } from "./usage";

const SSE_HEADERS = { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" };

export async function chatCompletions(c: Context<LlmEnv>, body: ChatRequest): Promise<Response> {
	const plane = planeFor(c);
	const { cfg } = plane;
	const targets = planTargets(cfg, plane.tier.models, body.model, "chat", { providers: narrowedProviders(c) });

	const input = checkChatInput(body, cfg.guardrails);
	if (input.blocked) {
		await refuseInput(plane, "chat", body.model, input.blocked.check);
	}
	const request = input.request;
	const stream = request.stream === true;
	const wantsUsage = stream && request.stream_options?.include_usage === true;

	const key = plane.cacheTtlS > 0 ? await cacheKey(plane.principal.tenantId, "chat", body.model, request) : null;
	if (key) {
		const hit = await readCache(key);
		if (hit && hit.body.object === "chat.completion") {
			const completion = hit.body as ChatCompletion;
			const target = targets.find((t) => t.provider === hit.provider && t.model === hit.model) ?? {
				provider: hit.provider,
				model: hit.model,
				weight: 1,
				priority: 0,
			};
			settle(plane, null, {
				operation: "chat",
				requested: body.model,
				target,
				promptTokens: completion.usage?.prompt_tokens ?? 0,
				completionTokens: completion.usage?.completion_tokens ?? 0,
				estimated: !completion.usage,
				status: 200,
				cacheHit: true,
				byok: false,
				attempts: 0,
			});
			const headers = servedHeaders(target, 0, "HIT");
			if (!stream) return c.json(completion, 200, headers);
			const chunks = completionToChunks(completion).filter((ch) => wantsUsage || ch.choices.length > 0);
			return c.body(sseBody(chunks), 200, { ...headers, ...SSE_HEADERS });
		}
	}

	const promptTokens = estimatePromptTokens(request);
	const maxOutput = request.max_completion_tokens ?? request.max_tokens ?? cfg.defaultMaxOutputTokens;
	const reservation = await reserveBudget(plane, targets, promptTokens, maxOutput);
	const fail = (err: unknown) => {
		settle(plane, reservation, {
			operation: "chat",
			requested: body.model,
			target: null,
			promptTokens: 0,
			completionTokens: 0,
			estimated: false,
			status: err instanceof ApiError ? err.status : 500,
			cacheHit: false,
			byok: false,
			attempts: 0,
		});
		return err;
	};

	if (!stream) {
		let served: Served<ChatCompletion>;
		try {
			served = await route(plane.routeEnv, targets, (a) =>
				a.provider.chat({
					model: a.target.model,
					request,
					apiKey: a.key.apiKey,
					signal: a.signal,
					traceparent: plane.traceparent,
				}),
			);
		} catch (err) {
			throw fail(err);
		}
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
			await auditBlock(plane, "output", output.blocked.check, body.model);
			throw contentBlocked("output", output.blocked.check);
		}
		settle(plane, reservation, outcome);
		if (key)
			c.executionCtx.waitUntil(
				writeCache(
					key,
					{ body: output.completion, provider: served.target.provider, model: served.target.model },
					plane.cacheTtlS,
				),
			);
		return c.json(output.completion, 200, servedHeaders(served.target, served.attempts, plane.cacheStatus));
	}

	let served: Served<{ first: IteratorResult<ChatCompletionChunk>; rest: AsyncIterator<ChatCompletionChunk> }>;
	try {
		served = await route(plane.routeEnv, targets, async (a) => {
			const chunks = await a.provider.chatStream({
				model: a.target.model,
				request,
				apiKey: a.key.apiKey,
				signal: a.signal,
				traceparent: plane.traceparent,
			});
			const rest = chunks[Symbol.asyncIterator]();
			// The first chunk decides: a failure before it may still fall back.
			return { first: await rest.next(), rest };
		});
	} catch (err) {
		throw fail(err);
	}
	return c.body(
		streamAnswer(plane, served, { requested: body.model, wantsUsage, promptTokens, reservation, key }),
		200,
		{ ...servedHeaders(served.target, served.attempts, plane.cacheStatus), ...SSE_HEADERS },
	);
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

/** The client's event stream over a started upstream stream. */
function streamAnswer(
	plane: Plane,
	served: Served<{ first: IteratorResult<ChatCompletionChunk>; rest: AsyncIterator<ChatCompletionChunk> }>,
	s: StreamState,
): ReadableStream<Uint8Array> {
	const { cfg } = plane;
	const checks = cfg.guardrails.output;
	const guard = checks.length > 0 ? new StreamGuard(compileGuardrails(checks)) : null;
	const keep = s.key !== null;
	const sent: ChatCompletionChunk[] = [];
	let pending: IteratorResult<ChatCompletionChunk> | null = served.value.first;
	let usage: Usage | null = null;
	let outputChars = 0;
	let last: ChatCompletionChunk | null = null;
	let done = false;
	let guardEnded = false;

	const finish = (status: number) => {
		if (done) return;
		done = true;
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
		if (status === 200 && s.key && sent.length > 0) {
			const like = last ?? sent[0];
			const completion = chunksToCompletion(usage && like ? [...sent, { ...like, choices: [], usage }] : sent);
			plane.c.executionCtx.waitUntil(
				writeCache(
					s.key,
					{ body: completion, provider: served.target.provider, model: served.target.model },
					plane.cacheTtlS,
				),
			);
		}
	};

	const next = async (): Promise<IteratorResult<ChatCompletionChunk>> => {
		if (pending) {
			const p = pending;
			pending = null;
			return p;
		}
		let timer: ReturnType<typeof setTimeout> | undefined;
		const idle = new Promise<never>((_, reject) => {
			timer = setTimeout(
				() => reject(new ProviderError("stream", `no chunk for ${cfg.routing.streamIdleTimeoutMs} ms`)),
				cfg.routing.streamIdleTimeoutMs,
			);
		});
		try {
			return await Promise.race([served.value.rest.next(), idle]);
		} finally {
			clearTimeout(timer);
		}
	};

	const emit = (controller: ReadableStreamDefaultController<Uint8Array>, chunk: ChatCompletionChunk) => {
		last = chunk;
		if (keep) sent.push(chunk);
		controller.enqueue(sseData(chunk));
	};

	/** Ends the guard: true if what it held back is blocked; otherwise its text goes out as a chunk of its own. */
	const endGuard = async (controller: ReadableStreamDefaultController<Uint8Array>, like: ChatCompletionChunk) => {
		if (!guard || guardEnded) return false;
		guardEnded = true;
		const tail = guard.end();
		if (tail.blocked) {
			await blockStream(controller, like, tail.blocked.check);
			return true;
		}
		if (tail.emit) {
			emit(controller, {
				...like,
				usage: undefined,
				choices: [{ index: 0, delta: { content: tail.emit }, finish_reason: null }],
			});
		}
		return false;
	};

	return new ReadableStream<Uint8Array>({
		async pull(controller) {
			// A pull that enqueues nothing is not called again: keep reading until something goes out.
			while (!(await step(controller))) {}
		},
		async cancel() {
			served.abort();
			await served.value.rest.return?.().catch(() => {});
			finish(499);
		},
	});

	/** Reads one upstream chunk and forwards what it yields. False when nothing went out (read another). */
	async function step(controller: ReadableStreamDefaultController<Uint8Array>): Promise<boolean> {
		try {
			const result = await next();
			if (result.done) {
				if (last && (await endGuard(controller, last))) return true;
				if (s.wantsUsage && usage && last)
					controller.enqueue(sseData({ ...(last as ChatCompletionChunk), choices: [], usage }));
				controller.enqueue(SSE_DONE);
				controller.close();
				finish(200);
				return true;
			}
			const chunk = result.value;
			if (chunk.usage) usage = chunk.usage;
			if (chunk.choices.length === 0) return false; // the usage chunk: sent at the end if asked for
			const choice = chunk.choices[0];
			const content = choice?.delta.content;
			if (guard && choice && typeof content === "string" && content.length > 0) {
				outputChars += content.length;
				const scanned = guard.push(content);
				if (scanned.blocked) {
					await blockStream(controller, chunk, scanned.blocked.check);
					return true;
				}
				const delta = { ...choice.delta, content: scanned.emit };
				if (choice.finish_reason) {
					// Text and finish in one chunk: the held-back tail must go out before the finish.
					if (scanned.emit)
						emit(controller, { ...chunk, usage: undefined, choices: [{ ...choice, delta, finish_reason: null }] });
					if (await endGuard(controller, chunk)) return true;
					emit(controller, { ...chunk, usage: undefined, choices: [{ ...choice, delta: {} }] });
					return true;
				}
				if (!scanned.emit && !choice.delta.tool_calls && !choice.delta.role) return false;
				emit(controller, { ...chunk, usage: undefined, choices: [{ ...choice, delta }] });
				return true;
			}
			if (typeof content === "string") outputChars += content.length;
			if (choice?.finish_reason && (await endGuard(controller, chunk))) return true;
			emit(controller, { ...chunk, usage: undefined });
			return true;
		} catch (err) {
			served.recordFailure();
			served.abort();
			log("warn", "llm stream failed after it started", {
				provider: served.target.provider,
				model: served.target.model,
				reason: err instanceof Error ? err.message : String(err),
				requestId: plane.c.var.requestId,
			});
			controller.enqueue(
				sseData({
					error: {
						message: "The provider's stream broke off.",
						type: "api_error",
						param: null,
						code: "upstream_error",
					},
				}),
			);
			controller.close();
			finish(502);
			return true;
		}
	}

	async function blockStream(
		controller: ReadableStreamDefaultController<Uint8Array>,
		like: ChatCompletionChunk,
		check: string,
	) {
		served.abort();
		await served.value.rest.return?.().catch(() => {});
		controller.enqueue(
			sseData({ ...like, usage: undefined, choices: [{ index: 0, delta: {}, finish_reason: "content_filter" }] }),
		);
		controller.enqueue(
			sseData({
				error: {
					message: contentBlocked("output", check).message,
					type: "invalid_request_error",
					param: null,
					code: "content_blocked",
				},
			}),
		);
		controller.close();
		finish(400);
		await auditBlock(plane, "output", check, s.requested).catch((err) =>
			log("error", "content block not audited", { reason: err instanceof Error ? err.message : String(err) }),
		);
	}
}
