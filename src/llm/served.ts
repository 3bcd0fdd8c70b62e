/** The response headers that say who served an LLM answer, and how. */
import type { CachedAnswer } from "./cache";
import type { Target } from "./config";

export type CacheStatus = "HIT" | "MISS" | "BYPASS" | "OFF";

export function servedHeaders(target: Target | null, attempts: number, cache: CacheStatus): Record<string, string> {
	return {
		...(target ? { "x-edgeway-provider": target.provider, "x-edgeway-model": target.model } : {}),
		"x-edgeway-attempts": String(attempts),
		"x-edgeway-cache": cache,
	};
}

/** The target a cached answer names: who served it when it was stored. */
export function cachedTarget(hit: CachedAnswer): Target {
	return { provider: hit.provider, model: hit.model, weight: 1, priority: 0 };
}
