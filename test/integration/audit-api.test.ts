/** The audit API through the Worker: listing with filters and cursors, chain verification, tenant separation. */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { type AuditEntry, type AuditListItem, appendAudit } from "../../src/audit";
import { call, expectProblem } from "../helpers/gateway";
import { hsToken, seedTenant } from "../helpers/identity";

interface Page {
	records: AuditListItem[];
	nextCursor: string | null;
}

interface Verification {
	ok: boolean;
	records: number;
	firstBrokenSeq?: number;
	reason?: string;
	head: { seq: number; hash: string } | null;
	unchained: number;
}

const T0 = Date.UTC(2026, 0, 1);
const minutes = (n: number) => T0 + n * 60_000;

/** A tenant with an admin token and `n` records: actions alternate key.create / key.revoke, actors jwt:a / jwt:b. */
async function tenantWithRecords(n: number) {
	const tenantId = await seedTenant();
	const entries: AuditEntry[] = Array.from({ length: n }, (_, i) => ({
		tenantId,
		actor: i % 2 === 0 ? "jwt:a" : "jwt:b",
		action: i % 3 === 0 ? "api_key.revoke" : "api_key.create",
		target: `api_key:k${i}`,
		metadata: { i },
		createdAt: minutes(i),
	}));
	await appendAudit(env.DB, entries);
	return { tenantId, token: await hsToken({ tenantId, scopes: ["admin"] }), entries };
}

async function list(token: string, query = ""): Promise<Page> {
	const res = await call(`/v1/audit${query}`, { token });
	expect(res.status).toBe(200);
	return (await res.json()) as Page;
}

/** Every page, following nextCursor. */
async function listAll(token: string, query: string): Promise<{ pages: Page[]; records: AuditListItem[] }> {
	const pages: Page[] = [];
	let cursor: string | null = null;
	do {
		const sep = query ? "&" : "?";
		const page = await list(token, `${query}${cursor ? `${sep}cursor=${cursor}` : ""}`);
		pages.push(page);
		cursor = page.nextCursor;
	} while (cursor && pages.length < 50);
	return { pages, records: pages.flatMap((p) => p.records) };
}

async function verify(token: string): Promise<Verification> {
	const res = await call("/v1/audit/verify", { token });
	expect(res.status).toBe(200);
	return (await res.json()) as Verification;
}

/** Runs `fn` with the append-only triggers dropped, then re-creates them exactly as migrations/0001 does. */
async function tampering(fn: () => Promise<unknown>) {
	const appendOnly = env.TEST_MIGRATIONS.find((m) => m.name.startsWith("0001_"));
	if (!appendOnly) throw new Error("migration 0001 (append-only triggers) not found");
	await env.DB.prepare("DROP TRIGGER audit_log_no_update").run();
	await env.DB.prepare("DROP TRIGGER audit_log_no_delete").run();
	try {
		await fn();
	} finally {
		for (const query of appendOnly.queries) await env.DB.prepare(query).run();
	}
}

const actionsOf = (records: AuditListItem[]) => records.map((r) => (r.metadata as { i: number }).i);

describe("GET /v1/audit", () => {
	it("lists the tenant's records newest first, page by page, each once", async () => {
		const { token, tenantId } = await tenantWithRecords(7);
		const { pages, records } = await listAll(token, "?limit=3");
		expect(pages.map((p) => p.records.length)).toEqual([3, 3, 1]);
		expect(pages.at(-1)?.nextCursor).toBeNull();
		expect(actionsOf(records)).toEqual([6, 5, 4, 3, 2, 1, 0]);
		expect(records.map((r) => r.seq)).toEqual([7, 6, 5, 4, 3, 2, 1]);
		expect(records[0]).toMatchObject({
			tenantId,
			actor: "jwt:a",
			action: "api_key.revoke",
			target: "api_key:k6",
			createdAt: minutes(6),
			prevHash: records[1]?.hash,
			hash: expect.stringMatching(/^[0-9a-f]{64}$/),
		});
		const everything = await list(token);
		expect(everything.records).toHaveLength(7);
		expect(everything.nextCursor).toBeNull();
	});

	it("filters by action, actor and time (ms or ISO 8601), also across pages", async () => {
		const { token } = await tenantWithRecords(9);
		expect(actionsOf((await list(token, "?action=api_key.revoke")).records)).toEqual([6, 3, 0]);
		expect(actionsOf((await list(token, "?actor=jwt:b")).records)).toEqual([7, 5, 3, 1]);
		expect(actionsOf((await list(token, "?action=api_key.create&actor=jwt:a")).records)).toEqual([8, 4, 2]);
		expect(actionsOf((await list(token, `?since=${minutes(6)}`)).records)).toEqual([8, 7, 6]);
		expect(actionsOf((await list(token, `?until=${new Date(minutes(2)).toISOString()}`)).records)).toEqual([1, 0]);
		const window = `?since=${new Date(minutes(2)).toISOString()}&until=${minutes(7)}`;
		expect(actionsOf((await list(token, window)).records)).toEqual([6, 5, 4, 3, 2]);
		const paged = await listAll(token, "?action=api_key.create&limit=2");
		expect(paged.pages.map((p) => p.records.length)).toEqual([2, 2, 2]);
		expect(actionsOf(paged.records)).toEqual([8, 7, 5, 4, 2, 1]);
		expect((await list(token, "?action=nothing.like.this")).records).toEqual([]);
	});

	it("lists records written before the chain existed after the chained ones, and does not verify them", async () => {
		const { tenantId, token } = await tenantWithRecords(3);
		for (const action of ["legacy.one", "legacy.two"]) {
			await env.DB.prepare("INSERT INTO audit_log (tenant_id, actor, action) VALUES (?, 'system', ?)")
				.bind(tenantId, action)
				.run();
		}
		const { pages, records } = await listAll(token, "?limit=2");
		expect(pages.map((p) => p.records.length)).toEqual([2, 2, 1]);
		expect(records.map((r) => r.seq ?? r.action)).toEqual([3, 2, 1, "legacy.two", "legacy.one"]);
		expect(records[3]).toMatchObject({ seq: null, prevHash: null, hash: null });
		expect(await verify(token)).toMatchObject({ ok: true, records: 3, unchained: 2, head: { seq: 3 } });
	});

	it("answers 400 for a bad limit, cursor or time", async () => {
		const { token } = await tenantWithRecords(1);
		for (const query of ["?limit=201", "?limit=0", "?cursor=garbage", "?cursor=s", "?since=yesterday", "?until=-5"]) {
			const problem = await expectProblem(await call(`/v1/audit${query}`, { token }), 400, "validation-failed");
			expect(problem.errors?.length, query).toBeGreaterThan(0);
		}
		expect((await list(token, "?limit=200")).records).toHaveLength(1);
	});
});

describe("GET /v1/audit/verify", () => {
	it("passes an untouched chain, including records written through the admin API", async () => {
		const { token, tenantId } = await tenantWithRecords(5);
		const before = await verify(token);
		expect(before).toEqual({
			ok: true,
			records: 5,
			head: { seq: 5, hash: expect.stringMatching(/^[0-9a-f]{64}$/) },
			unchained: 0,
		});
		const created = await call(`/v1/admin/tenants/${tenantId}/keys`, {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: JSON.stringify({ name: "ci", scopes: ["admin"] }),
			token,
		});
		expect(created.status).toBe(201);
		expect(await verify(token)).toMatchObject({ ok: true, records: 6, head: { seq: 6 } });
		expect((await list(token, "?limit=1")).records[0]).toMatchObject({ seq: 6, action: "api_key.create" });
	});

	it("finds a modified record and names its seq", async () => {
		const { tenantId, token } = await tenantWithRecords(5);
		await tampering(() =>
			env.DB.prepare("UPDATE audit_log SET metadata = '{\"i\":99}' WHERE tenant_id = ? AND seq = 2")
				.bind(tenantId)
				.run(),
		);
		expect(await verify(token)).toMatchObject({ ok: false, records: 1, firstBrokenSeq: 2, reason: "modified" });
		// The triggers are back: the log refuses changes again.
		await expect(
			env.DB.prepare("UPDATE audit_log SET action = 'x' WHERE tenant_id = ?").bind(tenantId).run(),
		).rejects.toThrow(/append-only/);
	});

	it("finds a deleted record and names the missing seq", async () => {
		const { tenantId, token } = await tenantWithRecords(5);
		await tampering(() => env.DB.prepare("DELETE FROM audit_log WHERE tenant_id = ? AND seq = 3").bind(tenantId).run());
		expect(await verify(token)).toMatchObject({ ok: false, records: 2, firstBrokenSeq: 3, reason: "deleted" });
		await expect(env.DB.prepare("DELETE FROM audit_log WHERE tenant_id = ?").bind(tenantId).run()).rejects.toThrow(
			/append-only/,
		);
	});
});

describe("audit: tenant separation", () => {
	it("never lists another tenant's records, whatever the query says", async () => {
		const a = await tenantWithRecords(3);
		const b = await tenantWithRecords(6);
		const seen = [
			...(await listAll(a.token, "")).records,
			...(await list(a.token, `?tenantId=${b.tenantId}`)).records,
			...(await list(a.token, "?cursor=s99")).records,
			...(await list(a.token, "?cursor=l999999")).records,
			...(await list(a.token, "?actor=jwt:b&action=api_key.create")).records,
		];
		expect(new Set(seen.map((r) => r.tenantId))).toEqual(new Set([a.tenantId]));
		expect((await listAll(a.token, "")).records).toHaveLength(3);
		expect((await listAll(b.token, "")).records).toHaveLength(6);
	});

	it("verifies only the caller's chain: B's broken chain is not A's, and A's count is A's", async () => {
		const a = await tenantWithRecords(2);
		const b = await tenantWithRecords(4);
		await tampering(() =>
			env.DB.prepare("DELETE FROM audit_log WHERE tenant_id = ? AND seq = 1").bind(b.tenantId).run(),
		);
		expect(await verify(a.token)).toMatchObject({ ok: true, records: 2 });
		expect(await verify(b.token)).toMatchObject({ ok: false, records: 0, firstBrokenSeq: 1, reason: "deleted" });
	});
});

describe("audit: OpenAPI", () => {
	it("documents GET /v1/audit with its filters and GET /v1/audit/verify", async () => {
		const res = await call("/openapi.json");
		expect(res.status).toBe(200);
		const doc = (await res.json()) as {
			paths: Record<string, { get?: { parameters?: Array<{ name: string; in: string }> } }>;
		};
		const params = doc.paths["/v1/audit"]?.get?.parameters?.map((p) => `${p.in}:${p.name}`);
		expect(params).toEqual(
			expect.arrayContaining([
				"query:action",
				"query:actor",
				"query:since",
				"query:until",
				"query:cursor",
				"query:limit",
			]),
		);
		expect(doc.paths["/v1/audit/verify"]?.get).toBeDefined();
	});
});
