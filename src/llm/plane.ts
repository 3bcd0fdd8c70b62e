/**
 * What every LLM request shares, whatever its operation: the caller's plan (aliases, cache TTL,
 * budget), the routing environment (providers, keys, breakers), budget reservation and settlement,
 * the usage record, and the audit record of a guardrail block. chat.ts and embeddings.ts use it.
 */
import type { Context } from "hono";
import type { Principal } from "../auth";
import { type BreakerClient, breakerClientFor } from "../breaker";
import { type LlmBudget, type TierPolicy, tierPolicy } from "../config";
import { newEvent, publish } from "../events";
import { ApiError, type AppEnv, formatTraceparent, log, waitUntil } from "../http";
import { type BudgetReservation, budgetsFor } from "./budget";
import { keyResolver } from "./byok";
import { type CachedAnswer, readCache } from "./cache";
import { costMicroUsd, type LlmConfig, llmConfig, priceOf, type Target } from "./config";
import { type ProviderCall, providersFor } from "./providers";
import type { Attempt, RouteEnv } from "./router";
import { recordUsage, type UsageRecord } from "./usage";

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
	/** The cache TTL for this caller, 0 when not cached (tier, feature, or a bypass header). */
	cacheTtlS: number;
	cacheStatus: "MISS" | "BYPASS" | "OFF";
}

export function planeFor(c: Context<AppEnv>): Plane {
	const cfg = llmConfig(c.env);
	const principal = c.var.principal;
	const tier = tierPolicy(principal.tier);
	const traceparent = formatTraceparent(c.var.trace);
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
		cacheTtlS: cacheable && !bypass ? tier.llm.cacheTtlS : 0,
		cacheStatus: !cacheable ? "OFF" : bypass ? "BYPASS" : "MISS",
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

/** `x-edgeway-providers: a, b` narrows the request to those providers. */
export function narrowedProviders(c: Context<AppEnv>): string[] | undefined {
	const header = c.req.header("x-edgeway-providers");
	if (!header) return undefined;
	return header
		.split(",")
		.map((s) => s.trim())
		.filter(Boolean);
}

/** The cache is keyed by what was asked for, narrowing included: a narrowed request never gets another provider's answer. */
export function cacheModel(model: string, narrowed: string[] | undefined): string {
	return narrowed && narrowed.length > 0 ? `${model}|providers=${[...narrowed].sort().join(",")}` : model;
}

/** The caller's monthly budget: the tenant's override, field by field, over the tier's. */
export function budgetOf(plane: Plane): LlmBudget {
	const own = plane.principal.tenantLimits?.llmBudget;
	const tier = plane.tier.llm.budget;
	return {
		monthlyTokens: own?.monthlyTokens !== undefined ? own.monthlyTokens : tier.monthlyTokens,
		monthlyMicroUsd: own?.monthlyMicroUsd !== undefined ? own.monthlyMicroUsd : tier.monthlyMicroUsd,
	};
}

/**
 * Reserves the most this request can cost (its prompt estimate plus its output cap, at the priciest
 * target's price) before any call. null when the caller has no budget. Throws 429 / 503.
 */
export async function reserveBudget(
	plane: Plane,
	targets: readonly Target[],
	promptTokens: number,
	outputTokens: number,
): Promise<BudgetReservation | null> {
	const budget = budgetOf(plane);
	if (budget.monthlyTokens === null && budget.monthlyMicroUsd === null) return null;
	const microUsd = Math.max(
		0,
		...targets.map((t) => costMicroUsd(priceOf(plane.cfg, t.provider, t.model), promptTokens, outputTokens)),
	);
	const { c } = plane;
	const answer = await budgetsFor(c.env).reserve(
		plane.principal.tenantId,
		budget,
		{ tokens: promptTokens + outputTokens, microUsd },
		(p) => waitUntil(c, p),
	);
	if (answer.ok) return answer.reservation;
	if (answer.limitedBy === "unavailable") {
		throw new ApiError("limiter-unavailable", "The budget could not be checked; retry shortly.", {
			reason: answer.reason,
		});
	}
	throw new ApiError(
		"budget-exceeded",
		answer.limitedBy === "tokens"
			? "This request would exceed your monthly token budget."
			: "This request would exceed your monthly spending budget.",
		{ headers: { "retry-after": String(Math.max(1, Math.ceil(answer.retryAfterMs / 1000))) } },
	);
}

/**
 * The cache lookup and the budget reservation, at once (each is a storage round trip). On a hit the
 * reservation is not needed (settle it with `cacheHit`, which charges nothing), and a budget refusal
 * does not matter: a cached answer costs nothing. On a miss the refusal is thrown.
 */
export async function lookupAndReserve(
	plane: Plane,
	key: string | null,
	targets: readonly Target[],
	promptTokens: number,
	outputTokens: number,
): Promise<{ hit: CachedAnswer | null; reservation: BudgetReservation | null }> {
	const [hit, reserved] = await Promise.all([
		key ? readCache(key) : Promise.resolve(null),
		reserveBudget(plane, targets, promptTokens, outputTokens).then(
			(reservation) => ({ reservation }),
			(error: unknown) => ({ error }),
		),
	]);
	if ("error" in reserved) {
		if (hit) return { hit, reservation: null };
		throw reserved.error;
	}
	return { hit, reservation: reserved.reservation };
}

/**
 * Runs `work` after the answer has been handed back (a timer turn later), kept alive by waitUntil:
 * bookkeeping (settlement, usage, cache writes) never delays the response it belongs to.
 */
export function afterResponse(c: Context<AppEnv>, work: () => Promise<unknown> | undefined): void {
	waitUntil(
		c,
		new Promise((resolve) => setTimeout(resolve, 1)).then(() => work()),
	);
}

export interface Outcome {
	operation: UsageRecord["operation"];
	requested: string;
	target: Target | null;
	promptTokens: number;
	completionTokens: number;
	estimated: boolean;
	status: number;
	cacheHit: boolean;
	byok: boolean;
	attempts: number;
}

/** What a request reports: the fields it leaves out mean "nothing happened" (no target, no tokens, no attempt). */
export type OutcomeInput = Pick<Outcome, "operation" | "requested" | "status"> & Partial<Outcome>;

/** The status a thrown error is answered with. */
export function statusOf(err: unknown): number {
	return err instanceof ApiError ? err.status : 500;
}

/** After the answer: settles the reservation with what was spent and records the usage (both in the background). */
export function settle(plane: Plane, reservation: BudgetReservation | null, input: OutcomeInput): void {
	const o: Outcome = {
		target: null,
		promptTokens: 0,
		completionTokens: 0,
		estimated: false,
		cacheHit: false,
		byok: false,
		attempts: 0,
		...input,
	};
	const price = o.target ? priceOf(plane.cfg, o.target.provider, o.target.model) : null;
	// A cached answer costs no provider call: it is recorded with its tokens, charged nothing.
	const cost = o.cacheHit ? 0 : costMicroUsd(price, o.promptTokens, o.completionTokens);
	const tokens = o.cacheHit ? 0 : o.promptTokens + o.completionTokens;
	const { c, principal } = plane;
	if (reservation) afterResponse(c, () => budgetsFor(c.env).settle(reservation, { tokens, microUsd: cost }));
	const record: Omit<UsageRecord, "id" | "time"> = {
		actor: principal.actor,
		...(principal.keyId ? { keyId: principal.keyId } : {}),
		requestId: c.var.requestId,
		operation: o.operation,
		requested: o.requested,
		provider: o.target?.provider ?? null,
		model: o.target?.model ?? null,
		promptTokens: o.promptTokens,
		completionTokens: o.completionTokens,
		estimated: o.estimated,
		costMicroUsd: cost,
		latencyMs: Date.now() - plane.started,
		status: o.status,
		cacheHit: o.cacheHit,
		byok: o.byok,
		attempts: o.attempts,
	};
	try {
		recordUsage(c.env, (p) => waitUntil(c, p), {
			tenantId: principal.tenantId,
			traceparent: plane.traceparent,
			record,
		});
	} catch (err) {
		// The answer stands; a usage record that cannot be made is logged, never the caller's 500.
		log("error", "usage not recorded", {
			requestId: c.var.requestId,
			reason: err instanceof Error ? err.message : String(err),
		});
	}
}

/**
 * Writes the SENSITIVE_CONTENT_BLOCKED audit record (through the events queue, before the answer
 * goes out). It names the check and where it fired, never the text.
 */
export async function auditBlock(
	plane: Plane,
	where: "input" | "output",
	check: string,
	requested: string,
): Promise<void> {
	const { c, principal } = plane;
	try {
		await publish(
			c.env,
			newEvent({
				type: "audit.record",
				tenantId: principal.tenantId,
				source: "llm",
				traceparent: plane.traceparent,
				data: {
					actor: principal.actor,
					action: "SENSITIVE_CONTENT_BLOCKED",
					target: `llm:${requested}`,
					requestId: c.var.requestId,
					metadata: { where, check },
				},
			}),
		);
	} catch (err) {
		// The block stands either way; a lost record is an operator's alarm, never the caller's 500.
		log("error", "content block not audited", {
			check,
			requestId: c.var.requestId,
			reason: err instanceof Error ? err.message : String(err),
		});
	}
}

/** The response headers that say who served and how. */
export function servedHeaders(
	target: Target | null,
	attempts: number,
	cache: "HIT" | "MISS" | "BYPASS" | "OFF",
): Record<string, string> {
	return {
		...(target ? { "x-edgeway-provider": target.provider, "x-edgeway-model": target.model } : {}),
		"x-edgeway-attempts": String(attempts),
		"x-edgeway-cache": cache,
	};
}

/** An input refused by a guardrail: audited, recorded as a usage record of its own (no provider, no tokens), thrown. */
export async function refuseInput(
	plane: Plane,
	operation: Outcome["operation"],
	requested: string,
	check: string,
): Promise<never> {
	settle(plane, null, { operation, requested, status: 400 });
	await auditBlock(plane, "input", check, requested);
	throw contentBlocked("input", check);
}

export function contentBlocked(where: "input" | "output", check: string): ApiError {
	return new ApiError(
		"content-blocked",
		`The ${where === "input" ? "request" : "answer"} was blocked by the \`${check}\` check.`,
	);
}

/** Tier check for `GET /v1/models` and friends: the aliases and targets this caller may name. */
export function allowedModels(cfg: LlmConfig, tier: TierPolicy): Array<{ id: string; kind: "chat" | "embeddings" }> {
	const any = tier.models.includes("*");
	const out: Array<{ id: string; kind: "chat" | "embeddings" }> = [];
	const seen = new Set<string>();
	for (const [name, alias] of Object.entries(cfg.aliases)) {
		const allowed = any || tier.models.includes(name);
		if (!allowed) continue;
		out.push({ id: name, kind: alias.kind });
		for (const t of alias.targets) {
			const id = `${t.provider}/${t.model}`;
			if (!seen.has(id)) {
				seen.add(id);
				out.push({ id, kind: alias.kind });
			}
		}
	}
	return out;
}
