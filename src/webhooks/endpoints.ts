/** Webhook endpoints as the ingest path sees them: read from D1, secrets unsealed, cached briefly in the isolate. */
import { eq } from "drizzle-orm";
import { tenantView } from "../auth";
import { config, type Limits, type TierName, tierPolicy } from "../config";
import { database, webhookEndpoints } from "../db";
import { TtlLru } from "../lib";
import { seal, unseal } from "../storage";
import { type SourceConfig, SourceConfigSchema, type WebhookSource } from "./signatures";

export interface EndpointView {
	id: string;
	tenantId: string;
	source: WebhookSource;
	config: SourceConfig;
	/** The active signing secrets, in the clear (1 or 2 during rotation). */
	secrets: string[];
	status: "active" | "disabled";
	destinationUrl: string | null;
	tenantStatus: "active" | "suspended";
	tier: TierName;
	/** The tenant's operator overrides (rate, quota, webhook ingest), for admission. */
	tenantLimits: Limits | null;
	maxBodyBytes: number;
}

/** A disabled endpoint, a rotated secret or a suspended tenant is seen by every isolate within this long. */
export const ENDPOINT_CACHE_MS = 5000;

const cache = new TtlLru<string, EndpointView | null>(10_000);

export function endpointCacheForget(id: string): void {
	cache.delete(id);
}

/** Seals a list of secrets for storage. */
export async function sealSecrets(env: Env, tenantId: string, secrets: string[]): Promise<string> {
	return seal(encryptionKey(env), tenantId, JSON.stringify(secrets));
}

export function encryptionKey(env: Env): string {
	const key = config(env).ENCRYPTION_KEY;
	if (!key) throw new Error("ENCRYPTION_KEY is not configured");
	return key;
}

/** The endpoint with its secrets, or null. Cached (misses too) for {@link ENDPOINT_CACHE_MS}. */
export async function endpointView(env: Env, id: string): Promise<EndpointView | null> {
	const now = Date.now();
	const hit = cache.get(id, now);
	if (hit !== undefined) return hit;
	const row = await database(env.DB).select().from(webhookEndpoints).where(eq(webhookEndpoints.id, id)).get();
	let view: EndpointView | null = null;
	if (row) {
		const tenant = await tenantView(env.DB, row.tenantId);
		if (tenant) {
			const secrets = JSON.parse(await unseal(encryptionKey(env), row.tenantId, row.secrets)) as string[];
			view = {
				id: row.id,
				tenantId: row.tenantId,
				source: row.source,
				config: SourceConfigSchema.parse(row.config ?? {}),
				secrets,
				status: row.status,
				destinationUrl: row.destinationUrl,
				tenantStatus: tenant.status,
				tier: tenant.tier,
				tenantLimits: tenant.limits,
				maxBodyBytes: tierPolicy(tenant.tier).maxBodyBytes,
			};
		}
	}
	cache.set(id, view, now + ENDPOINT_CACHE_MS);
	return view;
}
