/**
 * API keys through the admin API, over real HTTP, with two gateway isolates: an operator creates a
 * tenant and a key, the key works as `x-api-key` and as a Bearer token in both isolates, and after
 * revocation both refuse it — the revoking isolate at once, the other within its 5 s key cache.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { useOperatorGateway } from "../helpers/node/admin.ts";
import { call, eventually, expectProblem } from "../helpers/node/http.ts";

/**
 * How long isolates cache a key (src/auth/api-keys.ts KEY_CACHE_MS), plus room for a loaded machine: the
 * poll stops as soon as B refuses, so the room costs nothing when it is not needed.
 */
const REVOCATION_DEADLINE_MS = 5000 + 25_000;
/** How often the poll asks isolate B: it stops within this long of the cached copy expiring. */
const POLL_MS = 50;

const file = useOperatorGateway({ isolates: 2 });

beforeAll(() => {
	expect(file.operator.tenantId).toBe("edgeway");
});

describe("API keys end to end", () => {
	it("are created, used, revoked and then refused in every isolate", async () => {
		const { gw, operator } = file;
		const [a, b] = gw.urls as [URL, URL];

		const tenant = await operator.createTenant(a, { id: "globex", name: "Globex", tier: "pro" });
		expect(tenant.status).toBe(201);
		expect(await tenant.json()).toMatchObject({ id: "globex", tier: "pro", status: "active" });

		const created = await operator.createKey(a, "globex", { name: "ci", scopes: ["api:read"] });
		expect(created.status).toBe(201);
		const key = (await created.json()) as { id: string; key: string; prefix: string; scopes: string[] };
		expect(key.id).toMatch(/^key_[a-z0-9]{16}$/);
		expect(key.key.startsWith(`${key.prefix}_`)).toBe(true);
		expect(key.scopes).toEqual(["api:read"]);

		// The key works in both isolates, as x-api-key and as a Bearer token.
		for (const base of [a, b]) {
			const forms: Record<string, string>[] = [{ "x-api-key": key.key }, { authorization: `Bearer ${key.key}` }];
			for (const headers of forms) {
				const me = await call(base, "/v1/me", { headers });
				expect(me.status).toBe(200);
				expect(await me.json()).toEqual({
					tenantId: "globex",
					actor: `key:${key.id}`,
					via: "api-key",
					tier: "pro",
					scopes: ["api:read"],
				});
				expect(me.headers.get("ratelimit")).toMatch(/"burst";r=\d+/);
			}
		}

		// The secret is never listed.
		const list = await operator.listKeys(a, "globex");
		expect(list.status).toBe(200);
		const listed = (await list.json()) as { keys: Record<string, unknown>[] };
		expect(listed.keys.map((k) => k.id)).toEqual([key.id]);
		expect(JSON.stringify(listed)).not.toContain(key.key);

		// Revoke through isolate A.
		const revoked = await operator.revokeKey(a, "globex", key.id);
		expect(revoked.status).toBe(200);
		expect((await revoked.json()) as { revokedAt: number | null }).toMatchObject({ revokedAt: expect.any(Number) });

		// The revoking isolate forgot the key: refused at once.
		await expectProblem(await call(a, "/v1/me", { headers: { "x-api-key": key.key } }), 401, "invalid-token");

		// The other isolate refuses it once its cached copy expires (≤ 5 s): poll, bounded.
		const start = Date.now();
		const refused = await eventually(
			async () => {
				const res = await call(b, "/v1/me", { headers: { "x-api-key": key.key } });
				await res.arrayBuffer();
				if (res.status === 200) return false;
				expect(res.status).toBe(401);
				return true;
			},
			REVOCATION_DEADLINE_MS,
			POLL_MS,
		);
		expect(refused, `isolate B still accepted the revoked key after ${Date.now() - start} ms`).toBe(true);

		// And from then on, everywhere, in both forms.
		for (const base of [a, b]) {
			await expectProblem(await call(base, "/v1/me", { headers: { "x-api-key": key.key } }), 401, "invalid-token");
			const bearer = await call(base, "/v1/me", { headers: { authorization: `Bearer ${key.key}` } });
			await expectProblem(bearer, 401, "invalid-token");
		}
	});

	it("refuses admin calls without the admin scope, and key creation for unknown tenants", async () => {
		const { gw, operator } = file;
		const [a] = gw.urls as [URL];
		const reader = await gw.mintJwt({ tenantId: operator.tenantId, scopes: ["api:read"] });
		const denied = await call(a, "/v1/admin/tenants", {
			method: "POST",
			headers: { authorization: `Bearer ${reader}` },
			body: { id: "initech", name: "Initech", tier: "free" },
		});
		await expectProblem(denied, 403, "insufficient-scope");

		const missing = await operator.createKey(a, "no-such-tenant", { name: "x", scopes: ["api:read"] });
		await expectProblem(missing, 404, "not-found");
	});
});
