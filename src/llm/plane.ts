/**
 * The LLM plane's entry: the request context, built once per request, that every step reads.
 *
 * A request's walk, top to bottom (chat.ts and embeddings.ts read in this order; a module imports
 * only the context and the steps after its own, never one before):
 *   planeFor(c)        plane.ts        the context: principal, tier, config, narrowing, cache policy, routing env
 *   planTargets(…)     router.ts       the targets that may serve the model, in order
 *   check…Input(…)     guardrails/     input guardrails; a block is recorded, audited and thrown (refuseInput)
 *   admit(…)           admission.ts    cache key, then cache lookup and budget reservation at once → hit, Bill
 *   route(…)           router.ts       attempts over the targets, each a providerCall(…) (this file)
 *   checkChatOutput(…) guardrails/     output guardrails; a stream is started and guarded chunk by chunk (stream/)
 *   bill.settle(…)     settlement.ts   budget settlement, usage record, cache write (after the response)
 *   servedHeaders(…)   served.ts       who served and how
 * spend.ts is the one module that talks to the budget (reserve for admission, settle for the Bill).
 */
import type { Context } from "hono";
import { type BreakerClient, breakerClientFor } from "../breaker";
import { type TierPolicy, tierPolicy } from "../config";
import { type AppEnv, formatTraceparent, type Principal, waitUntil } from "../http";
import { sleep } from "../lib";
import { keyResolver } from "./byok";
import { type LlmConfig, llmConfig } from "./config";
import { type ProviderCall, providersFor } from "./providers";
import type { Attempt, RouteEnv } from "./router";

/** Breakers trust a closed answer this long, so a healthy provider costs no breaker round trip per call. */
const CLOSED_TRUST_MS = 1000;

/** The isolate's breaker client for provider calls (the webhook forwarder has its own, without closed trust). */
function llmBreakers(env: Env): BreakerClient {
	return breakerClientFor(env, { closedTrustMs: CLOSED_TRUST_MS });
}

export interface Plane {
	c: Context<AppEnv>;
	cfg: LlmConfig;
	principal: Principal;
	tier: TierPolicy;
	routeEnv: RouteEnv;
	traceparent: string;
	started: number;
	/** `x-edgeway-providers: a, b` narrows the request to those providers; undefined when not narrowed. */
	narrowed: string[] | undefined;
	/** The cache TTL for this caller, 0 when not cached (tier, feature, or a bypass header). */
	cacheTtlS: number;
	cacheStatus: "MISS" | "BYPASS" | "OFF";
	/** Work waiting for the answer to be handed back (see {@link afterResponse}); undefined when none is. */
	after: Array<() => Promise<unknown> | undefined> | undefined;
}

export function planeFor(c: Context<AppEnv>): Plane {
	const cfg = llmConfig(c.env);
	const principal = c.get("principal");
	const tier = tierPolicy(principal.tier);
	const traceparent = formatTraceparent(c.get("trace"));
	const env = c.env;
	const cacheable = tier.llm.cacheTtlS > 0 && tier.features.includes("cache");
	const bypass =
		/\b(no-cache|no-store)\b/i.test(c.req.header("cache-control") ?? "") ||
		/^bypass$/i.test(c.req.header("x-edgeway-cache") ?? "");
	return {
		c,
		cfg,
		principal,
		tier,
		traceparent,
		started: Date.now(),
		narrowed: narrowedProviders(c),
		cacheTtlS: cacheable && !bypass ? tier.llm.cacheTtlS : 0,
		cacheStatus: !cacheable ? "OFF" : bypass ? "BYPASS" : "MISS",
		after: undefined,
		routeEnv: {
			cfg,
			tenantId: principal.tenantId,
			providers: providersFor(cfg, env.AI),
			breakers: llmBreakers(env),
			keyFor: keyResolver(env, principal.tenantId, tier.features.includes("byok")),
			waitUntil: (p) => waitUntil(c, p),
			signal: c.req.raw.signal,
			traceparent,
		},
	};
}

function narrowedProviders(c: Context<AppEnv>): string[] | undefined {
	const header = c.req.header("x-edgeway-providers");
	if (!header) return undefined;
	return header
		.split(",")
		.map((s) => s.trim())
		.filter(Boolean);
}

/**
 * One attempt's provider call. `answer: "whole"` stops the attempt's timer at the response head (see
 * Attempt.responded); a stream keeps it running until its first chunk.
 */
export function providerCall<R>(plane: Plane, a: Attempt, request: R, answer: "whole" | "stream"): ProviderCall<R> {
	return {
		model: a.target.model,
		request,
		apiKey: a.key.apiKey,
		signal: a.signal,
		traceparent: plane.traceparent,
		...(answer === "whole" ? { onResponse: a.responded } : {}),
	};
}

/**
 * Runs `work` after the answer has been handed back (a timer turn later), kept alive by waitUntil:
 * bookkeeping (settlement, usage, cache writes) never delays the response it belongs to. A request's
 * work queued before that turn shares its one timer and its one waitUntil.
 */
export function afterResponse(plane: Plane, work: () => Promise<unknown> | undefined): void {
	if (plane.after) {
		plane.after.push(work);
		return;
	}
	const queued = [work];
	plane.after = queued;
	waitUntil(
		plane.c,
		sleep(1).then(() => {
			plane.after = undefined;
			return Promise.all(queued.map((w) => w()));
		}),
	);
}
