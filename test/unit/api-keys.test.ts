/** API keys: format, verification against the real D1, and the last-used write throttle. */
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { generateApiKey, LAST_USED_WRITE_INTERVAL_MS, touchKey, verifyApiKey } from "../../src/auth";
import { apiKeys, database } from "../../src/db";
import { seedKey, seedTenant } from "../helpers/identity";

describe("API keys", () => {
	it("generates a public prefix, a 256-bit secret, and stores only its hash", async () => {
		const a = await generateApiKey();
		const b = await generateApiKey();
		expect(a.key).toMatch(/^ew_[a-z0-9]{12}_[0-9a-f]{64}$/);
		expect(a.key.startsWith(`${a.prefix}_`)).toBe(true);
		expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
		expect(a.hash).not.toContain(a.key.slice(16));
		expect(a.key).not.toBe(b.key);
	});

	it("verifies a key and says why one is refused", async () => {
		const tenantId = await seedTenant();
		const good = await seedKey(tenantId, { scopes: ["api:read", "llm"] });
		expect(await verifyApiKey(env.DB, good.key)).toMatchObject({
			ok: true,
			value: { tenantId, scopes: ["api:read", "llm"] },
		});
		expect(await verifyApiKey(env.DB, `${good.prefix}_${"f".repeat(64)}`)).toEqual({
			ok: false,
			reason: "bad-secret",
			tenantId,
		});
		expect(await verifyApiKey(env.DB, "ew_short")).toEqual({ ok: false, reason: "malformed" });
		expect(await verifyApiKey(env.DB, `ew_zzzzzzzzzzzz_${"0".repeat(64)}`)).toEqual({
			ok: false,
			reason: "unknown-key",
		});
	});

	it("writes last_used_at once per key per interval in an isolate, however many requests", async () => {
		const tenantId = await seedTenant();
		const { id } = await seedKey(tenantId);
		const t0 = Date.now();
		const writes = [0, 1, 2, 3, 4].map((i) => touchKey(env.DB, id, t0 + i * 1000));
		expect(writes.filter(Boolean)).toHaveLength(1);
		await writes[0];
		const row = await database(env.DB).select({ at: apiKeys.lastUsedAt }).from(apiKeys).where(eq(apiKeys.id, id)).get();
		expect(row?.at).toBe(t0);
		// After the interval, the next use writes again.
		const later = touchKey(env.DB, id, t0 + LAST_USED_WRITE_INTERVAL_MS + 1);
		expect(later).toBeDefined();
		await later;
		const again = await database(env.DB)
			.select({ at: apiKeys.lastUsedAt })
			.from(apiKeys)
			.where(eq(apiKeys.id, id))
			.get();
		expect(again?.at).toBe(t0 + LAST_USED_WRITE_INTERVAL_MS + 1);
	});
});
