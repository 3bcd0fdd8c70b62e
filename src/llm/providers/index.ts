/** The configured providers, built once per configuration (and Workers AI binding) per isolate. */
import type { LlmConfig } from "../config";
import { anthropicProvider } from "./anthropic";
import type { Provider } from "./interface";
import { openAiProvider } from "./openai";
import { workersAiProvider } from "./workers-ai";

export * from "./interface";

const built = new WeakMap<LlmConfig, Map<string, Provider>>();

/**
 * Name → provider for every provider in the configuration that can run here. Workers AI needs the
 * `AI` binding, which is remote-only: without it the provider is absent (its targets are skipped,
 * not failed, so no breaker learns from a binding that was never there).
 */
export function providersFor(cfg: LlmConfig, ai: Ai | undefined): ReadonlyMap<string, Provider> {
	let map = built.get(cfg);
	if (!map) {
		map = new Map();
		for (const [name, p] of Object.entries(cfg.providers)) {
			if (p.kind === "workers-ai") {
				if (ai) map.set(name, workersAiProvider(name, { ai: () => ai }));
			} else if (p.kind === "anthropic")
				map.set(name, anthropicProvider(name, { baseUrl: p.baseUrl ?? "", headers: p.headers }));
			else map.set(name, openAiProvider(name, { kind: p.kind, baseUrl: p.baseUrl ?? "", headers: p.headers }));
		}
		built.set(cfg, map);
	}
	return map;
}
