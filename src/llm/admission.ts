/**
 * Admission of a request that passed its input guardrails: its cache key, then the cache lookup and
 * the budget reservation at once (each is a storage round trip). What comes out is the cached answer,
 * if any, and the request's Bill, which settles what the reservation holds.
 */
import { type CachedAnswer, cacheKey, readCache } from "./cache";
import type { Target } from "./config";
import type { Plane } from "./plane";
import { type Asked, Bill } from "./settlement";
import { type Reservation, reserveBudget } from "./spend";
import type { ChatRequest, EmbeddingsRequest } from "./types";

/** What admission weighs of a request. */
export interface Ask {
	/** The request as it will be sent (input guardrails applied): what the cache is keyed by. */
	request: ChatRequest | EmbeddingsRequest;
	targets: readonly Target[];
	promptTokens: number;
	/** The most output the request may produce (its cap), reserved against the budget. */
	outputTokens: number;
}

export interface Admitted {
	/** The cache key of the request; null when this caller's answers are not cached. */
	key: string | null;
	hit: CachedAnswer | null;
	bill: Bill;
}

/** The cache is keyed by what was asked for, narrowing included: a narrowed request never gets another provider's answer. */
function cacheModel(model: string, narrowed: readonly string[] | undefined): string {
	return narrowed && narrowed.length > 0 ? `${model}|providers=${[...narrowed].sort().join(",")}` : model;
}

/**
 * The cache lookup and the budget reservation, at once. On a hit the reservation is not needed (the
 * bill settles it charging nothing), and a budget refusal does not matter: a cached answer costs
 * nothing. On a miss the refusal is thrown.
 */
export async function admit(plane: Plane, asked: Asked, ask: Ask): Promise<Admitted> {
	const key =
		plane.cacheTtlS > 0
			? await cacheKey(
					plane.principal.tenantId,
					asked.operation,
					cacheModel(asked.requested, plane.narrowed),
					ask.request,
				)
			: null;
	const [hit, reserved] = await Promise.all([
		key ? readCache(key) : Promise.resolve(null),
		reserveBudget(plane, ask.targets, ask.promptTokens, ask.outputTokens).then(
			(reservation) => ({ reservation }),
			(error: unknown) => ({ error }),
		),
	]);
	let reservation: Reservation | null = null;
	if ("error" in reserved) {
		if (!hit) throw reserved.error;
	} else {
		reservation = reserved.reservation;
	}
	return { key, hit, bill: new Bill(plane, asked, reservation) };
}
