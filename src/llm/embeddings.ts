/** `POST /v1/embeddings`: input guardrails → cache → budget → routing → answer → settlement and usage in the background. */
import type { Context } from "hono";
import { ApiError, type AppEnv } from "../http";
import { cacheKey, writeCache } from "./cache";
import { checkEmbeddingsInput } from "./guardrails";
import {
	afterResponse,
	cacheModel,
	lookupAndReserve,
	narrowedProviders,
	planeFor,
	providerCall,
	refuseInput,
	servedHeaders,
	settle,
	statusOf,
} from "./plane";
import { ProviderError } from "./providers";
import { planTargets, route } from "./router";
import type { EmbeddingsRequest, EmbeddingsResponse } from "./types";
import { estimateEmbeddingsTokens } from "./usage";

export async function embeddings(c: Context<AppEnv>, body: EmbeddingsRequest): Promise<Response> {
	const plane = planeFor(c);
	const narrowed = narrowedProviders(c);
	// Only providers with an embeddings API can serve (Anthropic has none).
	const targets = planTargets(plane.cfg, plane.tier.models, body.model, "embeddings", { providers: narrowed }).filter(
		(t) => plane.routeEnv.providers.get(t.provider)?.embed,
	);
	if (targets.length === 0) {
		throw new ApiError("model-not-found", `No provider of \`${body.model}\` here serves embeddings.`);
	}
	const input = checkEmbeddingsInput(body.input, plane.cfg.guardrails);
	if (input.blocked) {
		await refuseInput(plane, "embeddings", body.model, input.blocked.check);
	}
	const request: EmbeddingsRequest = { ...body, input: input.input };
	const base = { operation: "embeddings" as const, requested: body.model };

	const key =
		plane.cacheTtlS > 0
			? await cacheKey(plane.principal.tenantId, "embeddings", cacheModel(body.model, narrowed), request)
			: null;
	const promptTokens = estimateEmbeddingsTokens(request);
	const { hit, reservation } = await lookupAndReserve(plane, key, targets, promptTokens, 0);
	if (hit && hit.body.object === "list") {
		const answer = hit.body as EmbeddingsResponse;
		const target = { provider: hit.provider, model: hit.model, weight: 1, priority: 0 };
		settle(plane, reservation, {
			...base,
			target,
			promptTokens: answer.usage?.prompt_tokens ?? promptTokens,
			status: 200,
			cacheHit: true,
		});
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
		settle(plane, reservation, {
			...base,
			target: served.target,
			promptTokens: served.value.usage?.prompt_tokens ?? promptTokens,
			estimated: !served.value.usage,
			status: 200,
			cacheHit: false,
			byok: served.byok,
			attempts: served.attempts,
		});
		if (key) {
			const value = { body: served.value, provider: served.target.provider, model: served.target.model };
			afterResponse(c, () => writeCache(key, value, plane.cacheTtlS));
		}
		return c.json(served.value, 200, servedHeaders(served.target, served.attempts, plane.cacheStatus));
	} catch (err) {
		settle(plane, reservation, { ...base, status: statusOf(err) });
		throw err;
	}
}
