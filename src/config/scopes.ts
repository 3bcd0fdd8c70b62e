/** Scopes a credential may carry, one per route group. */
import { z } from "zod";

export const SCOPES = ["admin", "api:read", "api:write", "llm", "webhooks:manage", "files"] as const;
export const ScopeSchema = z.enum(SCOPES);
export type Scope = z.infer<typeof ScopeSchema>;

/** Splits an OAuth-style space-separated scope string (or array) into known scopes; unknown ones are dropped. */
export function parseScopes(value: unknown): Scope[] {
	const raw = Array.isArray(value) ? value : typeof value === "string" ? value.split(" ") : [];
	const known = new Set<Scope>();
	for (const s of raw) {
		const r = ScopeSchema.safeParse(s);
		if (r.success) known.add(r.data);
	}
	return [...known];
}
