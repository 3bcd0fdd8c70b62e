/**
 * Suspending and resuming a tenant through the admin API, over real HTTP, with two gateway isolates.
 * The operator suspends the tenant on isolate A, which forgets its cached copy and refuses the tenant
 * at once; isolate B, which has just served the tenant (so it holds the tenant in its 5 s cache),
 * refuses every credential of it with 403 `tenant-suspended` within a bounded poll. Resuming lets the
 * tenant back in the same way.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { useOperatorGateway } from "../helpers/node/admin.ts";
import { call, eventually, expectProblem } from "../helpers/node/http.ts";

/**
 * How long isolates cache a tenant (src/auth/tenants.ts TENANT_CACHE_MS), plus room for a loaded machine: the
 * poll stops as soon as B agrees, so the room costs nothing when it is not needed.
 */
const STATUS_DEADLINE_MS = 5000 + 20_000;
/** How often the poll asks isolate B: it stops within this long of the cached copy expiring. */
const POLL_MS = 50;
const TENANT = "hooli";

const file = useOperatorGateway({ isolates: 2 });

beforeAll(() => {
	expect(file.operator.tenantId).toBe("edgeway");
});

describe("tenant suspension end to end", () => {
	it("is enforced by every isolate within the tenant cache bound, and so is resumption", async () => {
		const { gw, operator } = file;
		const [a, b] = gw.urls as [URL, URL];

		const created = await operator.createTenant(a, { id: TENANT, name: "Hooli", tier: "pro" });
		expect(created.status).toBe(201);
		await created.arrayBuffer();
		const keyRes = await operator.createKey(a, TENANT, { name: "ci", scopes: ["api:read"] });
		expect(keyRes.status).toBe(201);
		const { key } = (await keyRes.json()) as { key: string };
		const jwt = await gw.mintJwt({ tenantId: TENANT, scopes: ["api:read"], sub: "gavin" });

		/** Every credential form the tenant has. */
		const credentials: Record<string, string>[] = [{ authorization: `Bearer ${jwt}` }, { "x-api-key": key }];

		/** Status of `/v1/me` for every credential on `base`: all 200, or all 403 `tenant-suspended`. */
		async function statusOn(base: URL): Promise<"active" | "suspended" | "mixed"> {
			const seen = new Set<string>();
			for (const headers of credentials) {
				const res = await call(base, "/v1/me", { headers });
				if (res.status === 200) {
					expect(((await res.json()) as { tenantId: string }).tenantId).toBe(TENANT);
					seen.add("active");
				} else {
					await expectProblem(res, 403, "tenant-suspended");
					seen.add("suspended");
				}
			}
			return seen.size === 1 ? ([...seen][0] as "active" | "suspended") : "mixed";
		}

		async function setStatus(status: "active" | "suspended") {
			const res = await operator.setTenantStatus(a, TENANT, status);
			expect(res.status).toBe(200);
			expect(await res.json()).toMatchObject({ id: TENANT, status });
		}

		/** Polls isolate B until every credential sees `status`; bounded. Anything but 200 / 403 fails the test. */
		async function untilB(status: "active" | "suspended") {
			const start = Date.now();
			const reached = await eventually(async () => (await statusOn(b)) === status, STATUS_DEADLINE_MS, POLL_MS);
			expect(reached, `isolate B did not see the tenant ${status} within ${Date.now() - start} ms`).toBe(true);
		}

		// Both isolates serve the tenant, so both now hold it in their tenant cache.
		expect(await statusOn(a)).toBe("active");
		expect(await statusOn(b)).toBe("active");

		// Suspend through isolate A: A forgot its cached copy and refuses at once.
		await setStatus("suspended");
		expect(await statusOn(a)).toBe("suspended");
		// B refuses once its cached copy expires (≤ 5 s).
		await untilB("suspended");
		// And from then on, in both isolates.
		expect(await statusOn(a)).toBe("suspended");
		expect(await statusOn(b)).toBe("suspended");

		// The operator still reads the tenant, through either isolate.
		const read = await operator.getTenant(b, TENANT);
		expect(read.status).toBe(200);
		expect(await read.json()).toMatchObject({ id: TENANT, status: "suspended" });

		// Resume through isolate A: A lets the tenant in at once, B within the same bound.
		await setStatus("active");
		expect(await statusOn(a)).toBe("active");
		await untilB("active");
		expect(await statusOn(a)).toBe("active");
		expect(await statusOn(b)).toBe("active");

		// Each change is in the audit log.
		const audit = await (await gw.db())
			.prepare("SELECT action FROM audit_log WHERE tenant_id = ? AND action LIKE 'tenant.%' ORDER BY id")
			.bind(TENANT)
			.all<{ action: string }>();
		expect(audit.results.map((r) => r.action)).toEqual(["tenant.create", "tenant.suspend", "tenant.resume"]);
	});
});
