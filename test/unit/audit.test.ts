/** The audit log against the real local D1: large appends in one call, and the append-only triggers. */
import { env } from "cloudflare:workers";
import { eq, inArray } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { type AuditEntry, appendAudit, listAudit } from "../../src/audit";
import { auditLog, database } from "../../src/db";

describe("appendAudit", () => {
	it("writes 40 records for several tenants in one call, beyond D1's 100 bound parameters per statement", async () => {
		const tenantIds = ["audit-a", "audit-b", "audit-c", "audit-d"];
		const entries: AuditEntry[] = Array.from({ length: 40 }, (_, i) => ({
			tenantId: tenantIds[i % tenantIds.length] as string,
			actor: "system",
			action: "auth.failures",
			target: i % 2 === 0 ? `window:${i}` : null,
			requestId: i % 3 === 0 ? `req-${i}` : undefined,
			metadata: { n: i, reasons: { expired: i } },
		}));

		await appendAudit(env.DB, entries);

		const stored = await database(env.DB)
			.select()
			.from(auditLog)
			.where(inArray(auditLog.tenantId, tenantIds))
			.orderBy(auditLog.id)
			.all();
		expect(stored).toHaveLength(40);
		expect(
			stored.map((r) => ({
				tenantId: r.tenantId,
				actor: r.actor,
				action: r.action,
				target: r.target,
				requestId: r.requestId,
				metadata: r.metadata,
			})),
		).toEqual(entries.map((e) => ({ ...e, requestId: e.requestId ?? null })));
		for (const r of stored) expect(r.createdAt).toEqual(expect.any(Number));

		for (const tenantId of tenantIds) {
			const page = await listAudit(env.DB, tenantId, { limit: 100 });
			expect(page).toHaveLength(10);
			expect(page.map((r) => (r.metadata as { n: number }).n)).toEqual(
				entries
					.map((e, i) => ({ e, i }))
					.filter(({ e }) => e.tenantId === tenantId)
					.map(({ i }) => i)
					.reverse(),
			);
		}
	});

	it("writes nothing for an empty list", async () => {
		const before = await database(env.DB).$count(auditLog);
		await appendAudit(env.DB, []);
		expect(await database(env.DB).$count(auditLog)).toBe(before);
	});

	it("writes none of the records when one of them is refused", async () => {
		const entries: AuditEntry[] = Array.from({ length: 30 }, (_, i) => ({
			tenantId: "audit-all-or-nothing",
			actor: "system",
			action: "test",
			metadata: { n: i },
		}));
		// The last record lands in a later statement of the batch than the first ones.
		entries.push({ tenantId: "audit-all-or-nothing", actor: null as unknown as string, action: "test" });
		await expect(appendAudit(env.DB, entries)).rejects.toThrow(/NOT NULL constraint failed: audit_log\.actor/);
		expect(await database(env.DB).$count(auditLog, eq(auditLog.tenantId, "audit-all-or-nothing"))).toBe(0);
	});
});

describe("audit_log table", () => {
	it("refuses to update or delete a record", async () => {
		await appendAudit(env.DB, { tenantId: "audit-immutable", actor: "system", action: "tenant.create" });
		const db = database(env.DB);
		await expect(
			env.DB.prepare("UPDATE audit_log SET action = 'tenant.forged' WHERE tenant_id = ?").bind("audit-immutable").run(),
		).rejects.toThrow(/audit_log is append-only/);
		await expect(
			env.DB.prepare("DELETE FROM audit_log WHERE tenant_id = ?").bind("audit-immutable").run(),
		).rejects.toThrow(/audit_log is append-only/);
		const rows = await db.select().from(auditLog).where(eq(auditLog.tenantId, "audit-immutable")).all();
		expect(rows.map((r) => r.action)).toEqual(["tenant.create"]);
	});
});
