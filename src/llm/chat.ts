/**
 * `POST /v1/chat/completions`: input guardrails → admission (cache lookup and budget reservation) →
 * routing → output guardrails → answer (JSON, or a stream) → settlement, usage record and cache write
 * in the background. The walk is described in plane.ts.
 *
 * Streams (stream/). The router hands over a stream only once its first chunk is in hand, so every
 * failure before that falls back; after it, nothing is retried. Output guardrails scan the streamed
 * text with a bounded look-behind (StreamGuard): a block ends the stream with `finish_reason:
 * "content_filter"` and an error event, and is audited. Usage is always asked of the upstream; the
 * usage chunk reaches the client only if it asked (`stream_options.include_usage`). A stream that goes
 * silent for `streamIdleTimeoutMs` is cut. Tool-call arguments are scanned too, per call, in streams
 * and in JSON answers.
 */
import type { Context } from "hono";
import type { AppEnv } from "../http";
import { admit } from "./admission";
import { type CachedAnswer, completionToChunks } from "./cache";
import type { Target } from "./config";
import { checkChatInput, checkChatOutput } from "./guardrails";
import { type Plane, planeFor, providerCall } from "./plane";
import { planTargets, route, type Served } from "./router";
import { cachedTarget, servedHeaders } from "./served";
import { type Bill, refuseInput, refuseOutput, storeAnswer } from "./settlement";
import { SSE_HEADERS, sseStream } from "./sse";
import { startStream, streamAnswer } from "./stream";
import type { ChatCompletion, ChatRequest } from "./types";
import { estimateCompletionTokens, estimatePromptTokens } from "./usage";

export async function chatCompletions(c: Context<AppEnv>, body: ChatRequest): Promise<Response> {
	const plane = planeFor(c);
	const targets = planTargets(plane.cfg, plane.tier.models, body.model, "chat", { providers: plane.narrowed });

	const asked = { operation: "chat", requested: body.model } as const;
	const input = checkChatInput(body, plane.cfg.guardrails);
	if (input.blocked) await refuseInput(plane, asked, input.blocked.check);
	const { request, maxOutput } = withOutputCap(input.request, plane.cfg.defaultMaxOutputTokens);
	const stream = request.stream === true;
	const wantsUsage = stream && request.stream_options?.include_usage === true;
	const promptTokens = estimatePromptTokens(request);

	const { key, hit, bill } = await admit(plane, asked, { request, targets, promptTokens, outputTokens: maxOutput });
	if (hit && hit.body.object === "chat.completion") return fromCache(plane, bill, hit, { stream, wantsUsage });
	if (!stream) return answerWhole(plane, bill, targets, request, promptTokens, key);

	const upstream = await startStream(plane, bill, targets, request);
	return c.body(streamAnswer(plane, bill, upstream, { wantsUsage, promptTokens, key }), 200, {
		...servedHeaders(upstream.target, upstream.attempts, plane.cacheStatus),
		...SSE_HEADERS,
	});
}

/**
 * What is reserved is what may be spent: without a cap of its own, the request gets the default one
 * (as `max_completion_tokens`, the field every OpenAI model accepts; the providers map it where needed).
 */
function withOutputCap(request: ChatRequest, defaultMax: number): { request: ChatRequest; maxOutput: number } {
	const maxOutput = request.max_completion_tokens ?? request.max_tokens ?? defaultMax;
	const capped = request.max_completion_tokens || request.max_tokens;
	return { request: capped ? request : { ...request, max_completion_tokens: maxOutput }, maxOutput };
}

/** A cached completion: as JSON, or replayed as a stream (the usage chunk only when asked for). */
function fromCache(
	plane: Plane,
	bill: Bill,
	hit: CachedAnswer,
	{ stream, wantsUsage }: { stream: boolean; wantsUsage: boolean },
): Response {
	const completion = hit.body as ChatCompletion;
	const target = cachedTarget(hit);
	bill.settle({
		target,
		promptTokens: completion.usage?.prompt_tokens ?? 0,
		completionTokens: completion.usage?.completion_tokens ?? 0,
		estimated: !completion.usage,
		status: 200,
		cacheHit: true,
	});
	const headers = servedHeaders(target, 0, "HIT");
	if (!stream) return plane.c.json(completion, 200, headers);
	const chunks = completionToChunks(completion).filter((ch) => wantsUsage || ch.choices.length > 0);
	return plane.c.body(sseStream(chunks), 200, { ...headers, ...SSE_HEADERS });
}

/** A JSON answer: routed, checked by the output guardrails, settled, cached. */
async function answerWhole(
	plane: Plane,
	bill: Bill,
	targets: readonly Target[],
	request: ChatRequest,
	promptTokens: number,
	key: string | null,
): Promise<Response> {
	let served: Served<ChatCompletion> | undefined;
	try {
		served = await route(plane.routeEnv, targets, (a) => a.provider.chat(providerCall(plane, a, request, "whole")));
		const { target, value, attempts, byok } = served;
		const spent = {
			target,
			promptTokens: value.usage?.prompt_tokens ?? promptTokens,
			completionTokens: value.usage?.completion_tokens ?? estimateCompletionTokens(value),
			estimated: !value.usage,
			status: 200,
			cacheHit: false,
			byok,
			attempts,
		};
		const output = checkChatOutput(value, plane.cfg.guardrails.output);
		if (output.blocked) return await refuseOutput(plane, bill, spent, output.blocked.check);
		bill.settle(spent);
		if (key) storeAnswer(plane, key, output.completion, target);
		return plane.c.json(output.completion, 200, servedHeaders(target, attempts, plane.cacheStatus));
	} catch (err) {
		// Settled already when the answer was blocked; otherwise the failure is what is settled.
		bill.failed(err, served);
		throw err;
	}
}
