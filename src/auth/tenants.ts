/** Tenant records as authentication sees them: read from D1, cached in the isolate for a few seconds. */
import { eq } from "drizzle-orm";
import { type Limits, LimitsSchema, type TierName } from "../config";
import { database, tenants } from "../db";
import { TtlLru } from "../lib";

export interface TenantView {
	id: string;
	tier: TierName;
	status: "active" | "suspended";
	limits: Limits | null;
}

/** A suspension or tier change is seen by every isolate within this long. */
export const TENANT_CACHE_MS = 5000;

const cache = new TtlLru<string, TenantView | null>(10_000);

export function parseLimits(value: unknown): Limits | null {
	if (value === null || value === undefined) return null;
	const parsed = LimitsSchema.safeParse(value);
	return parsed.success ? parsed.data : null;
}

/** The tenant, or null when there is none. Cached (including misses) for {@link TENANT_CACHE_MS}. */
export async function tenantView(d1: D1Database, id: string): Promise<TenantView | null> {
	const now = Date.now();
	const hit = cache.get(id, now);
	if (hit !== undefined) return hit;
	const row = await database(d1)
		.select({ id: tenants.id, tier: tenants.tier, status: tenants.status, limits: tenants.limits })
		.from(tenants)
		.where(eq(tenants.id, id))
		.get();
	const view = row ? { id: row.id, tier: row.tier, status: row.status, limits: parseLimits(row.limits) } : null;
	cache.set(id, view, now + TENANT_CACHE_MS);
	return view;
}

/** Forgets a tenant in this isolate (the admin API calls it after a change; other isolates expire on their own). */
export function forgetTenant(id: string): void {
	cache.delete(id);
}
