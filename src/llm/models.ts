/** `GET /v1/models`: the aliases and targets a caller's tier may name, as OpenAI model objects. */
import type { TierPolicy } from "../config";
import type { LlmConfig } from "./config";

/** The aliases this tier allows, each followed by its `provider/model` targets (each target once). */
function allowedModels(cfg: LlmConfig, tier: TierPolicy): Array<{ id: string; kind: "chat" | "embeddings" }> {
	const allowsAll = tier.models.includes("*");
	const out: Array<{ id: string; kind: "chat" | "embeddings" }> = [];
	const seen = new Set<string>();
	for (const [name, alias] of Object.entries(cfg.aliases)) {
		const allowed = allowsAll || tier.models.includes(name);
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

/** The body of `GET /v1/models`: OpenAI's model list, each entry with Edgeway's `kind`. */
export function modelList(cfg: LlmConfig, tier: TierPolicy) {
	return {
		object: "list" as const,
		data: allowedModels(cfg, tier).map((m) => ({
			id: m.id,
			object: "model" as const,
			created: 0,
			owned_by: m.id.includes("/") ? m.id.slice(0, m.id.indexOf("/")) : "edgeway",
			kind: m.kind,
		})),
	};
}
