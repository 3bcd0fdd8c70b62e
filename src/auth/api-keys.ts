/**
 * API keys: `ew_<12 chars>_<64 hex>`. The first part is public and finds the row; only the SHA-256
 * of the whole key is stored, and it is compared in constant time.
 */
import { eq, sql } from "drizzle-orm";
import { type Limits, parseScopes, type Scope, type TierName, TierNameSchema } from "../config";
import { apiKeys, database, newId } from "../db";
import { randomHex, sha256Hex, TtlLru, timingSafeEqualStrings } from "../lib";
import type { AuthResult } from "./principal";
import { parseLimits } from "./tenants";

const KEY_PATTERN = /^(ew_[a-z0-9]{12})_([0-9a-f]{64})$/;

/** A revocation is seen by every isolate within this long. */
export const KEY_CACHE_MS = 5000;
/** `last_used_at` is written at most this often per key per isolate. */
export const LAST_USED_WRITE_INTERVAL_MS = 60_000;

export interface KeyRecord {
	id: string;
	tenantId: string;
	hash: string;
	scopes: Scope[];
	tier: TierName | null;
	limits: Limits | null;
	expiresAt: number | null;
	revokedAt: number | null;
}

/** True when the presented credential has the shape of an Edgeway API key (not a JWT). */
export function looksLikeApiKey(value: string): boolean {
	return value.startsWith("ew_");
}

/** Makes a new key. Returns the secret once; store only `prefix` and `hash`. */
export async function generateApiKey(): Promise<{ key: string; prefix: string; hash: string }> {
	const prefix = newId("ew", 12);
	const key = `${prefix}_${randomHex(32)}`;
	return { key, prefix, hash: sha256Hex(key) };
}

const cache = new TtlLru<string, KeyRecord | null>(10_000);

async function findByPrefix(d1: D1Database, prefix: string): Promise<KeyRecord | null> {
	const now = Date.now();
	const hit = cache.get(prefix, now);
	if (hit !== undefined) return hit;
	const row = await database(d1)
		.select({
			id: apiKeys.id,
			tenantId: apiKeys.tenantId,
			hash: apiKeys.hash,
			scopes: apiKeys.scopes,
			tier: apiKeys.tier,
			limits: apiKeys.limits,
			expiresAt: apiKeys.expiresAt,
			revokedAt: apiKeys.revokedAt,
		})
		.from(apiKeys)
		.where(eq(apiKeys.prefix, prefix))
		.get();
	const record: KeyRecord | null = row
		? {
				...row,
				scopes: parseScopes(row.scopes),
				tier: TierNameSchema.safeParse(row.tier).data ?? null,
				limits: parseLimits(row.limits),
			}
		: null;
	cache.set(prefix, record, now + KEY_CACHE_MS);
	return record;
}

/** Forgets a key in this isolate (after revocation; other isolates expire within {@link KEY_CACHE_MS}). */
export function forgetKey(prefix: string): void {
	cache.delete(prefix);
}

/** Checks a presented key: known prefix, matching hash, not revoked, not expired. */
export async function verifyApiKey(d1: D1Database, presented: string): Promise<AuthResult<KeyRecord>> {
	const m = KEY_PATTERN.exec(presented);
	if (!m) return { ok: false, reason: "malformed" };
	const record = await findByPrefix(d1, m[1] as string);
	if (!record) return { ok: false, reason: "unknown-key" };
	const hash = sha256Hex(presented);
	if (!timingSafeEqualStrings(hash, record.hash)) return { ok: false, reason: "bad-secret", tenantId: record.tenantId };
	if (record.revokedAt !== null) return { ok: false, reason: "revoked", tenantId: record.tenantId };
	if (record.expiresAt !== null && record.expiresAt <= Date.now()) {
		return { ok: false, reason: "key-expired", tenantId: record.tenantId };
	}
	return { ok: true, value: record };
}

const lastWritten = new TtlLru<string, number>(10_000);

/**
 * Records that a key was used. Writes `last_used_at` at most once per key per
 * {@link LAST_USED_WRITE_INTERVAL_MS} in this isolate, so traffic never costs a D1 write per request.
 * Returns the write to hand to `waitUntil`, or undefined when none is due.
 */
export function touchKey(d1: D1Database, keyId: string, now = Date.now()): Promise<unknown> | undefined {
	if (lastWritten.get(keyId, now) !== undefined) return undefined;
	lastWritten.set(keyId, now, now + LAST_USED_WRITE_INTERVAL_MS);
	return database(d1)
		.update(apiKeys)
		.set({ lastUsedAt: now })
		.where(sql`${apiKeys.id} = ${keyId} AND (${apiKeys.lastUsedAt} IS NULL OR ${apiKeys.lastUsedAt} < ${now})`)
		.run()
		.catch(() => undefined);
}
