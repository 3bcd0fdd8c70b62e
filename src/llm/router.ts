/**
 * Routing: which targets may serve a request, in what order, and the attempt loop over them.
 *
 * Order. An alias's targets are grouped by priority (lower first). Within a group the order is a
 * weighted random permutation (each target's share of first place is its weight over the group's),
 * so traffic is balanced by weight and the rest of the group is the first fallback.
 *
 * Who may use what. The tier lists aliases (and `*`, any configured target). A request names an
 * alias, or a `provider/model` target: allowed when `*` is in the tier or the target belongs to an
 * allowed alias — so naming a target can narrow an alias, never widen the tier. The
 * `x-edgeway-providers` header narrows further to the listed providers.
 *
 * Attempts. For each target in order: skip it when its provider is absent here or has no key;
 * ask its breakers (the tenant's for the target, and the gateway's for the provider when the
 * gateway's key is used); call it with a per-attempt timeout inside the request's deadline; on a
 * retryable failure (429, 5xx, timeout, connection) retry the same target up to `retriesPerTarget`
 * times with full-jitter backoff, honouring Retry-After up to `retryAfterCapMs` (longer: move on);
 * then fall back to the next target if the failure's cause is in `fallbackOn`. A 4xx about the
 * request is answered at once. For a stream, `run` resolves only once the first chunk is in hand;
 * after that the router is done, so a stream is never retried or re-routed once a byte is sent.
 *
 * Breakers learn from every attempt: 5xx, timeouts, connection failures and unreadable answers are
 * failures; any other answer (2xx, and 4xx — the provider is up) is a success. Outcomes are recorded
 * in the background (waitUntil), off the response's path.
 */
import type { BreakerDecision, BreakerPolicy, Breakers } from "../breaker";
import { breakerName } from "../breaker";
import { ApiError } from "../http";
import { sleep } from "../lib";
import type { Alias, FallbackCause, LlmConfig, ProviderConfig, Target } from "./config";
import type { Provider } from "./providers/interface";
import { ProviderError } from "./providers/interface";

/** The key a call is made with; `byok` when it is the tenant's own. */
export interface CallKey {
	apiKey?: string;
	byok: boolean;
}

export interface RouteEnv {
	cfg: LlmConfig;
	tenantId: string;
	providers: ReadonlyMap<string, Provider>;
	breakers: Breakers;
	/** The key for a provider: the tenant's own if stored, else the gateway's; null = no key, skip. */
	keyFor(provider: string, config: ProviderConfig): Promise<CallKey | null>;
	waitUntil(promise: Promise<unknown>): void;
	/** Aborts every attempt (the client went away). */
	signal?: AbortSignal;
	traceparent?: string;
	now?: () => number;
	random?: () => number;
	sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface Served<T> {
	value: T;
	target: Target;
	attempts: number;
	byok: boolean;
	/** Aborts the upstream call behind `value` (a stream): the stream owner calls it on cancel or idle. */
	abort: () => void;
	/** Tells the breakers that a stream which started well then broke. */
	recordFailure: () => void;
}

/** What the attempt function gets. */
export interface Attempt {
	provider: Provider;
	target: Target;
	key: CallKey;
	signal: AbortSignal;
	/** Stops the attempt's timer: pass as `onResponse` for answers that are not streamed. */
	responded: () => void;
}

/** The targets a request may use, in the order to try them. Throws 404/403 in OpenAI terms. */
export function planTargets(
	cfg: LlmConfig,
	tierModels: readonly string[],
	requested: string,
	kind: Alias["kind"],
	options: { providers?: readonly string[]; random?: () => number } = {},
): Target[] {
	const any = tierModels.includes("*");
	let candidates: Target[];
	const alias = cfg.aliases[requested];
	if (alias) {
		if (alias.kind !== kind)
			throw new ApiError("model-not-found", `The model \`${requested}\` does not serve ${kind}.`);
		if (!any && !tierModels.includes(requested)) {
			throw new ApiError("tier-not-allowed", `Your plan does not include the model \`${requested}\`.`);
		}
		candidates = alias.targets;
	} else {
		const slash = requested.indexOf("/");
		const provider = slash > 0 ? requested.slice(0, slash) : "";
		const model = requested.slice(slash + 1);
		const matches = Object.entries(cfg.aliases)
			.filter(([, a]) => a.kind === kind)
			.flatMap(([name, a]) =>
				a.targets.filter((t) => t.provider === provider && t.model === model).map((t) => ({ name, t })),
			);
		if (matches.length === 0 && !(any && cfg.providers[provider] && model)) {
			throw new ApiError("model-not-found", `The model \`${requested}\` does not exist.`);
		}
		if (!any && !matches.some((m) => tierModels.includes(m.name))) {
			throw new ApiError("tier-not-allowed", `Your plan does not include the model \`${requested}\`.`);
		}
		candidates = [matches[0]?.t ?? { provider, model, weight: 1, priority: 0 }];
	}
	if (options.providers && options.providers.length > 0) {
		const keep = new Set(options.providers);
		candidates = candidates.filter((t) => keep.has(t.provider));
		if (candidates.length === 0) {
			throw new ApiError("model-not-found", `No target of \`${requested}\` is served by the requested providers.`);
		}
	}
	return order(candidates, options.random ?? Math.random);
}

/** Priority groups in order; each group a weighted random permutation (Efraimidis–Spirakis keys). */
function order(targets: readonly Target[], random: () => number): Target[] {
	return targets
		.map((t) => ({ t, key: random() ** (1 / t.weight) }))
		.sort((a, b) => a.t.priority - b.t.priority || b.key - a.key)
		.map((x) => x.t);
}

/** The failure's fallback cause, or null for an error about the request itself (answered as is). */
export function causeOf(err: ProviderError): FallbackCause | null {
	if (err.kind === "timeout") return "timeout";
	if (err.kind === "connection") return "connection";
	if (err.kind === "protocol" || err.kind === "stream") return "5xx";
	if (err.status === 429) return "429";
	if (err.status !== undefined && err.status >= 500) return "5xx";
	return null;
}

function isBreakerFailure(err: ProviderError): boolean {
	return err.kind !== "http" || (err.status !== undefined && err.status >= 500);
}

/** A breaker target names a provider target in printable ASCII without spaces (see breakerName). */
function breakerTarget(target: Target): string {
	return `llm:${target.provider}/${target.model}`.replace(/[^\x21-\x7e]/g, "_").slice(0, 160);
}

/** The breakers guarding one call, by name. */
function breakerNames(tenantId: string, target: Target, byok: boolean): string[] {
	const tenant = breakerName({ tenantId, target: breakerTarget(target) });
	// The gateway's breaker first: shared by every tenant, it is the one most often open (and refused from memory).
	return byok ? [tenant] : [breakerName({ gateway: true, target: `llm:${target.provider}` }), tenant];
}

/**
 * Asks a call's breakers one at a time: one that refuses (from memory when open) spares asking the next.
 * `decisions` are those that admitted the call, for its outcome to be recorded on.
 */
async function admitAll(
	r: RouteEnv,
	names: readonly string[],
	policy: BreakerPolicy,
): Promise<{ decisions: BreakerDecision[]; refused: BreakerDecision | undefined }> {
	const decisions: BreakerDecision[] = [];
	for (const name of names) {
		const decision = await r.breakers.admit(name, policy, { traceparent: r.traceparent });
		if (!decision.allowed) return { decisions, refused: decision };
		decisions.push(decision);
	}
	return { decisions, refused: undefined };
}

/**
 * Runs `run` against the planned targets until one succeeds, following the routing policy. Throws
 * an ApiError describing the last failure when none does.
 */
export async function route<T>(
	r: RouteEnv,
	targets: readonly Target[],
	run: (a: Attempt) => Promise<T>,
): Promise<Served<T>> {
	const { cfg } = r;
	const policy: BreakerPolicy = cfg.breaker;
	const routing = cfg.routing;
	const now = r.now ?? Date.now;
	const random = r.random ?? Math.random;
	const pause = r.sleep ?? sleep;
	const deadline = now() + routing.deadlineMs;
	let attempts = 0;
	let last: { cause: FallbackCause | "unavailable"; error?: ProviderError; retryAfterMs?: number } = {
		cause: "unavailable",
	};
	/** The last target that could not take this request at all. */
	let unsupported: { error: ProviderError; target: Target } | undefined;
	const ended = () => deadline - now() <= 0 || r.signal?.aborted === true;
	const timedOut = () =>
		failure(last.cause === "unavailable" ? { cause: "timeout" } : last, attempts, r.signal?.aborted);

	for (const target of targets) {
		const provider = r.providers.get(target.provider);
		const providerConfig = cfg.providers[target.provider];
		if (!provider || !providerConfig) continue;
		const key = await r.keyFor(target.provider, providerConfig);
		if (!key) continue;

		const names = breakerNames(r.tenantId, target, key.byok);
		for (let retry = 0; retry <= routing.retriesPerTarget; retry++) {
			if (ended()) throw timedOut();
			// Every attempt, a retry too, asks the breakers: a failure just recorded may have opened one.
			const { decisions, refused } = await admitAll(r, names, policy);
			/**
			 * Tells the breakers how the call went. A `release` frees a probe slot without counting (the call
			 * was not made, the client went away, or a 429 says nothing of health); for a plain call it
			 * records nothing.
			 */
			const record = (verdict: "success" | "failure" | "release") => {
				decisions.forEach((d, i) => {
					const name = names[i];
					if (!name || (verdict === "release" && !d.probe)) return;
					r.waitUntil(
						r.breakers.record(name, policy, {
							success: verdict === "success",
							release: verdict === "release",
							probe: d.probe,
							probeId: d.probeId,
							traceparent: r.traceparent,
						}),
					);
				});
			};
			if (refused) {
				record("release");
				// On a retry, the failure that opened the breaker stays the cause (it decides the fallback).
				if (retry === 0) last = { cause: "circuit-open", retryAfterMs: refused.retryAfterMs };
				break;
			}
			// Asking may have taken a round trip: the client may have gone, the deadline passed.
			if (ended()) {
				record("release");
				throw timedOut();
			}
			const remaining = deadline - now();
			attempts++;
			const controller = new AbortController();
			const onClientAbort = () => controller.abort();
			r.signal?.addEventListener("abort", onClientAbort, { once: true });
			// One timer per attempt: set for the attempt's timeout; once the upstream has answered, only the
			// request's deadline bounds reading the answer, so when it fires then, it waits out the rest.
			const attemptMs = Math.min(routing.attemptTimeoutMs, remaining);
			let abortAt = now() + attemptMs;
			const expire = () => {
				const left = abortAt - now();
				if (left > 0) timer = setTimeout(expire, left);
				else controller.abort();
			};
			let timer = setTimeout(expire, attemptMs);
			const responded = () => {
				abortAt = deadline;
			};
			try {
				const value = await run({ provider, target, key, signal: controller.signal, responded });
				clearTimeout(timer);
				r.signal?.removeEventListener("abort", onClientAbort);
				record("success");
				return {
					value,
					target,
					attempts,
					byok: key.byok,
					abort: () => controller.abort(),
					recordFailure: () => {
						for (const name of names) r.waitUntil(r.breakers.record(name, policy, { success: false }));
					},
				};
			} catch (err) {
				clearTimeout(timer);
				r.signal?.removeEventListener("abort", onClientAbort);
				if (!(err instanceof ProviderError)) throw err;
				if (err.kind === "unsupported") {
					// Says nothing of the target's health, and another target may take the request.
					record("release");
					unsupported = { error: err, target };
					break;
				}
				const cause = causeOf(err);
				if (r.signal?.aborted || err.status === 429) record("release");
				else record(isBreakerFailure(err) ? "failure" : "success");
				if (cause === null) throw requestError(err, target);
				last = { cause, error: err, retryAfterMs: err.retryAfterMs };
				if (r.signal?.aborted) throw failure(last, attempts, true);
				if (retry === routing.retriesPerTarget) break;
				let wait: number;
				if (err.retryAfterMs !== undefined) {
					if (err.retryAfterMs > routing.retryAfterCapMs) break;
					wait = err.retryAfterMs;
				} else {
					wait = random() * Math.min(routing.backoffMaxMs, routing.backoffBaseMs * 2 ** retry);
				}
				if (now() + wait >= deadline) break;
				await pause(wait, r.signal);
			}
		}
		if (last.cause !== "unavailable" && !routing.fallbackOn.includes(last.cause)) break;
	}
	// Only targets that could not take the request were tried: it is the request's doing.
	if (unsupported && last.cause === "unavailable") throw requestError(unsupported.error, unsupported.target);
	throw failure(last, attempts, r.signal?.aborted);
}

/** A provider's 4xx about the request: 400 with the upstream's message; a credential problem is the gateway's (502). */
function requestError(err: ProviderError, target: Target): ApiError {
	const reason = `${target.provider}/${target.model}: ${err.message}`;
	if (err.status === 401 || err.status === 403) {
		return new ApiError("upstream-error", `The provider \`${target.provider}\` refused the credentials.`, { reason });
	}
	if (err.status === 404) {
		return new ApiError(
			"model-not-found",
			`The provider \`${target.provider}\` does not know the model \`${target.model}\`.`,
			{
				reason,
			},
		);
	}
	return new ApiError(
		"bad-request",
		err.upstreamMessage ?? `The provider \`${target.provider}\` rejected the request.`,
		{
			reason,
		},
	);
}

/** The ApiError answered when every target failed or none could be tried. */
function failure(
	last: { cause: FallbackCause | "unavailable"; error?: ProviderError; retryAfterMs?: number },
	attempts: number,
	clientGone = false,
): ApiError {
	const reason = `${last.error?.message ?? last.cause} after ${attempts} attempt(s)${clientGone ? "; client went away" : ""}`;
	const retryAfter =
		last.retryAfterMs !== undefined
			? { "retry-after": String(Math.max(1, Math.ceil(last.retryAfterMs / 1000))) }
			: undefined;
	switch (last.cause) {
		case "429":
			return new ApiError("rate-limited", "Every provider for this model is rate limiting; retry later.", {
				reason,
				headers: retryAfter ?? { "retry-after": "1" },
			});
		case "timeout":
			return new ApiError("upstream-timeout", "No provider answered in time.", { reason });
		case "circuit-open":
			return new ApiError("upstream-unavailable", "Every provider for this model is failing; retry later.", {
				reason,
				headers: retryAfter,
			});
		case "unavailable":
			return new ApiError("upstream-unavailable", "No provider for this model is available here.", { reason });
		default:
			return new ApiError("upstream-error", "The provider failed to answer.", { reason });
	}
}
