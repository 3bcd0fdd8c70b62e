/**
 * `POST /v1/embeddings`: input guardrails → admission (cache lookup and budget reservation) → routing
 * → answer → settlement, usage record and cache write in the background. The walk is described in plane.ts.
 */
import type { Context } from "hono";
import { ApiError, type AppEnv } from "../http";
import { admit } from "./admission";
import { checkEmbeddingsInput } from "./guardrails";
import { planeFor, providerCall } from "./plane";
import { ProviderError } from "./providers";
import { planTargets, route } from "./router";
import { cachedTarget, servedHeaders } from "./served";
import { refuseInput, storeAnswer } from "./settlement";
import type { EmbeddingsRequest, EmbeddingsResponse } from "./types";
import { estimateEmbeddingsTokens } from "./usage";

export async function embeddings(c: Context<AppEnv>, body: EmbeddingsRequest): Promise<Response> {
	const plane = planeFor(c);
	// Only providers with an embeddings API can serve (Anthropic has none).
	const targets = planTargets(plane.cfg, plane.tier.models, body.model, "embeddings", {
		providers: plane.narrowed,
	}).filter((t) => plane.routeEnv.providers.get(t.provider)?.embed);
	if (targets.length === 0) {
		throw new ApiError("model-not-found", `No provider of \`${body.model}\` here serves embeddings.`);
	}

	const asked = { operation: "embeddings", requested: body.model } as const;
	const input = checkEmbeddingsInput(body.input, plane.cfg.guardrails);
	if (input.blocked) await refuseInput(plane, asked, input.blocked.check);
	const request: EmbeddingsRequest = { ...body, input: input.input };
	const promptTokens = estimateEmbeddingsTokens(request);

	const { key, hit, bill } = await admit(plane, asked, { request, targets, promptTokens, outputTokens: 0 });
	if (hit && hit.body.object === "list") {
		const answer = hit.body as EmbeddingsResponse;
		const target = cachedTarget(hit);
		bill.settle({ target, promptTokens: answer.usage?.prompt_tokens ?? promptTokens, status: 200, cacheHit: true });
		return c.json(answer, 200, servedHeaders(target, 0, "HIT"));
	}

	try {
		const served = await route(plane.routeEnv, targets, (a) => {
			const embed = a.provider.embed?.bind(a.provider);
			if (!embed) {
				// Not a failure of the provider: it must not count on the breakers (the gateway's are shared).
				throw new ProviderError("unsupported", `${a.provider.name} has no embeddings API`, {
					status: 400,
					upstreamMessage: `${a.target.provider} does not serve embeddings`,
				});
			}
			return embed(providerCall(plane, a, request, "whole"));
		});
		bill.settle({
			target: served.target,
			promptTokens: served.value.usage?.prompt_tokens ?? promptTokens,
			estimated: !served.value.usage,
			status: 200,
			cacheHit: false,
			byok: served.byok,
			attempts: served.attempts,
		});
		if (key) storeAnswer(plane, key, served.value, served.target);
		return c.json(served.value, 200, servedHeaders(served.target, served.attempts, plane.cacheStatus));
	} catch (err) {
		bill.failed(err);
		throw err;
	}
}
