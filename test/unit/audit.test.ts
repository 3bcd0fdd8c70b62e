/** The audit log against the real local D1: the hash chain, its writers under races, its check, and the events handler. */
import { env } from "cloudflare:workers";
import { asc, eq, inArray } from "drizzle-orm";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
	type AuditEntry,
	appendAudit,
	auditWriter,
	ChainVerifier,
	chainHash,
	commitWithAudit,
	listAudit,
	type StoredRecord,
	verifyAudit,
} from "../../src/audit";
import { type AuditRecord, auditLog, database, tenants } from "../../src/db";
import { type EventEnvelope, newEvent } from "../../src/events";
import { canonicalJson } from "../../src/lib";
import { uniqueId } from "../helpers/identity";

const chainOf = (tenantId: string) =>
	database(env.DB).select().from(auditLog).where(eq(auditLog.tenantId, tenantId)).orderBy(asc(auditLog.seq)).all();

/** Asserts seqs 1..n, each prev_hash the previous record's hash, and every hash recomputed from the fields. */
async function expectUnbrokenChain(records: AuditRecord[], length: number) {
	expect(records.map((r) => r.seq)).toEqual(Array.from({ length }, (_, i) => i + 1));
	let prev = "";
	for (const r of records) {
		expect(r.prevHash).toBe(prev);
		const hash = await chainHash({
			tenantId: r.tenantId,
			seq: r.seq as number,
			prevHash: r.prevHash as string,
			actor: r.actor,
			action: r.action,
			target: r.target,
			requestId: r.requestId,
			metadata: r.metadata,
			createdAt: r.createdAt,
			eventId: r.eventId,
		});
		expect(r.hash).toBe(hash);
		prev = hash;
	}
	const tenantId = records[0]?.tenantId;
	if (tenantId) expect(await verifyAudit(env.DB, tenantId)).toMatchObject({ ok: true, records: length });
}

/**
 * The same database as another isolate sees it: a binding of its own, so this isolate's queue of
 * writers does not line its writes up with ours. `beforeWrite` runs just before each batch that
 * writes audit records, after the writer has read the chain's head: the window a rival can win.
 */
function otherIsolate(beforeWrite?: () => Promise<void>): D1Database & { batches: () => number } {
	let writing = false;
	let batches = 0;
	return {
		prepare(query: string) {
			if (query.startsWith('insert into "audit_log"')) writing = true;
			return env.DB.prepare(query);
		},
		async batch<T>(statements: D1PreparedStatement[]) {
			batches++;
			if (writing) {
				writing = false;
				await beforeWrite?.();
			}
			return env.DB.batch<T>(statements);
		},
		exec: (query: string) => env.DB.exec(query),
		withSession: (constraint?: D1SessionBookmark | D1SessionConstraint) => env.DB.withSession(constraint),
		dump: () => env.DB.dump(),
		batches: () => batches,
	};
}

describe("canonical form", () => {
	it("sorts object keys at every depth, keeps array order and drops undefined members", () => {
		expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: "x" }, u: undefined })).toBe(
			'{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}',
		);
		expect(canonicalJson({ 10: "a", 2: "b", B: 1, a: 2 })).toBe('{"10":"a","2":"b","B":1,"a":2}');
		expect(canonicalJson(null)).toBe("null");
	});

	it("writes values nested 10,000 deep without exhausting the stack", () => {
		let value: unknown = { z: 1, a: [null] };
		for (let i = 0; i < 10_000; i++) value = i % 2 === 0 ? [value, i] : { b: value, a: i };
		const text = canonicalJson(value);
		expect(text.startsWith('{"a":9999,"b":[{"a":9997,"b":[')).toBe(true);
		expect(text).toContain('[{"a":[null],"z":1},0]},2]},4]}');
		expect(text.endsWith(",9998]}")).toBe(true);
	});

	it("agrees with the recursive definition (keys sorted, then JSON.stringify) on any JSON value", () => {
		const reference = (v: unknown): string => {
			if (v === null || typeof v !== "object") return JSON.stringify(v) ?? "null";
			if (Array.isArray(v)) return `[${v.map(reference).join(",")}]`;
			const r = v as Record<string, unknown>;
			const keys = Object.keys(r).filter((k) => r[k] !== undefined);
			return `{${keys
				.sort()
				.map((k) => `${JSON.stringify(k)}:${reference(r[k])}`)
				.join(",")}}`;
		};
		fc.assert(
			fc.property(fc.jsonValue(), (v) => {
				expect(canonicalJson(v)).toBe(reference(v));
			}),
			{ seed: 9, numRuns: 300 },
		);
	});

	it("gives a different hash when any covered field changes", async () => {
		const base = {
			tenantId: "t",
			seq: 3,
			prevHash: "ab",
			actor: "system",
			action: "x.y",
			target: null,
			requestId: "r",
			metadata: { a: 1, b: [1, 2] },
			createdAt: 1_700_000_000_000,
			eventId: null,
		};
		const hash = await chainHash(base);
		expect(hash).toMatch(/^[0-9a-f]{64}$/);
		expect(await chainHash({ ...base, metadata: { b: [1, 2], a: 1 } })).toBe(hash);
		const changes = [
			{ tenantId: "u" },
			{ seq: 4 },
			{ prevHash: "ac" },
			{ actor: "jwt:x" },
			{ action: "x.z" },
			{ target: "" },
			{ requestId: null },
			{ metadata: { a: 1, b: [2, 1] } },
			{ metadata: null },
			{ createdAt: 1_700_000_000_001 },
			{ eventId: "ev_1" },
		];
		for (const change of changes)
			expect(await chainHash({ ...base, ...change }), JSON.stringify(change)).not.toBe(hash);
	});
});

describe("appendAudit", () => {
	it("chains a tenant's records: seq 1, 2, 3, each prev_hash the previous hash", async () => {
		const tenantId = uniqueId("chain");
		await appendAudit(env.DB, { tenantId, actor: "system", action: "first", metadata: { n: 1 } });
		await appendAudit(env.DB, [
			{ tenantId, actor: "system", action: "second", createdAt: 1_700_000_000_000 },
			{ tenantId, actor: "jwt:x", action: "third", target: "tenant:x", requestId: "req-1" },
		]);
		const records = await chainOf(tenantId);
		expect(records.map((r) => r.action)).toEqual(["first", "second", "third"]);
		expect(records[0]?.prevHash).toBe("");
		expect(records[1]?.createdAt).toBe(1_700_000_000_000);
		await expectUnbrokenChain(records, 3);
	});

	it("stores what it hashes, so awkward values still verify: lone surrogates, undefined members, fractional times", async () => {
		const tenantId = uniqueId("awkward");
		await appendAudit(env.DB, {
			tenantId,
			actor: "jwt:\ud800x",
			action: "odd",
			target: "\udfff",
			metadata: { lone: "\ud83d", gone: undefined, when: new Date(0), list: [undefined, -0, 1e21] },
			createdAt: 1_700_000_000_000.7,
		});
		expect(await verifyAudit(env.DB, tenantId)).toMatchObject({ ok: true, records: 1 });
		const [record] = await chainOf(tenantId);
		expect(record).toMatchObject({ actor: "jwt:\ufffdx", target: "\ufffd", createdAt: 1_700_000_000_000 });
		expect(record?.metadata).toEqual({ lone: "\ud83d", when: "1970-01-01T00:00:00.000Z", list: [null, 0, 1e21] });
	});

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
			await expectUnbrokenChain(await chainOf(tenantId), 10);
			const page = await listAudit(env.DB, tenantId, { limit: 100 });
			expect(page.nextCursor).toBeNull();
			expect(page.records.map((r) => (r.metadata as { n: number }).n)).toEqual(
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

	it("writes none of the records when one of them is refused, and does not retry that error", async () => {
		const entries: AuditEntry[] = Array.from({ length: 30 }, (_, i) => ({
			tenantId: "audit-all-or-nothing",
			actor: "system",
			action: "test",
			metadata: { n: i },
		}));
		// The last record lands in a later statement of the batch than the first ones.
		entries.push({ tenantId: "audit-all-or-nothing", actor: null as unknown as string, action: "test" });
		const isolate = otherIsolate();
		await expect(appendAudit(isolate, entries)).rejects.toThrow(/NOT NULL constraint failed: audit_log\.actor/);
		expect(isolate.batches()).toBe(2); // one read of the head, one write
		expect(await database(env.DB).$count(auditLog, eq(auditLog.tenantId, "audit-all-or-nothing"))).toBe(0);
	});
});

describe("appendAudit under concurrency", () => {
	it("gives 30 concurrent appends for one tenant seqs 1..30 with an unbroken chain", async () => {
		const tenantId = uniqueId("concurrent");
		await Promise.all(
			Array.from({ length: 30 }, (_, i) => appendAudit(env.DB, { tenantId, actor: "system", action: `a${i}` })),
		);
		const records = await chainOf(tenantId);
		expect(new Set(records.map((r) => r.action)).size).toBe(30);
		await expectUnbrokenChain(records, 30);
	});

	it("gives 30 appends racing from three isolates seqs 1..30 with an unbroken chain", async () => {
		const tenantId = uniqueId("isolates");
		const isolates = [otherIsolate(), otherIsolate(), otherIsolate()];
		await Promise.all(
			Array.from({ length: 30 }, (_, i) =>
				appendAudit(isolates[i % 3] as D1Database, { tenantId, actor: "system", action: `a${i}` }),
			),
		);
		await expectUnbrokenChain(await chainOf(tenantId), 30);
	});

	it("does not let a writer stuck ahead in the isolate's line hold the tenant's writes up for more than 2 s", async () => {
		const tenantId = uniqueId("stuck");
		let calls = 0;
		// Another isolate's binding whose first statement batch never answers, like a request cancelled
		// in the middle of its write.
		const stalled: D1Database = {
			prepare: (query: string) => env.DB.prepare(query),
			batch: <T>(statements: D1PreparedStatement[]) =>
				++calls === 1 ? new Promise<D1Result<T>[]>(() => {}) : env.DB.batch<T>(statements),
			exec: (query: string) => env.DB.exec(query),
			withSession: (constraint?: D1SessionBookmark | D1SessionConstraint) => env.DB.withSession(constraint),
			dump: () => env.DB.dump(),
		};
		void appendAudit(stalled, { tenantId, actor: "system", action: "stuck" });
		const started = Date.now();
		await appendAudit(stalled, { tenantId, actor: "system", action: "next" });
		expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
		const records = await chainOf(tenantId);
		expect(records.map((r) => r.action)).toEqual(["next"]);
		await expectUnbrokenChain(records, 1);
	});

	it("re-reads and retries after losing the seq race, running the mutation of its batch again", async () => {
		const tenantId = uniqueId("raced");
		let raced = false;
		const isolate = otherIsolate(async () => {
			if (raced) return;
			raced = true;
			await appendAudit(env.DB, { tenantId, actor: "system", action: "rival" });
		});
		// A plain insert: had it not rolled back with the lost audit insert, its retry would fail on the id.
		const [[row]] = await commitWithAudit(isolate, { tenantId, actor: "jwt:ops", action: "tenant.create" }, (db) => [
			db.insert(tenants).values({ id: tenantId, name: "Raced", tier: "free" }).returning(),
		]);
		expect(row).toMatchObject({ id: tenantId, name: "Raced" });
		expect(isolate.batches()).toBe(4); // read, lost write, read again, write
		const records = await chainOf(tenantId);
		expect(records.map((r) => r.action)).toEqual(["rival", "tenant.create"]);
		await expectUnbrokenChain(records, 2);
		expect(await database(env.DB).$count(tenants, eq(tenants.id, tenantId))).toBe(1);
	});

	it("gives up after 8 lost races, propagating the conflict, and leaves nothing of its own behind", async () => {
		const tenantId = uniqueId("starved");
		let rivals = 0;
		// Every write of this isolate is beaten by a rival that lands between its head read and its write.
		const isolate = otherIsolate(async () => {
			rivals++;
			await appendAudit(env.DB, { tenantId, actor: "system", action: `rival-${rivals}` });
		});
		await expect(appendAudit(isolate, { tenantId, actor: "system", action: "starved" })).rejects.toThrow(
			/UNIQUE constraint failed: audit_log\.tenant_id, audit_log\.seq/,
		);
		expect(rivals).toBe(8);
		const records = await chainOf(tenantId);
		expect(records.map((r) => r.action)).toEqual(Array.from({ length: 8 }, (_, i) => `rival-${i + 1}`));
		await expectUnbrokenChain(records, 8);
	});
});

interface Fields {
	tenantId: string;
	seq: number;
	prevHash: string;
	action: string;
}

/** A record as the database would return it, hashed over its fields (or given a hash). */
async function stored(f: Fields, hash?: string): Promise<StoredRecord> {
	const fields = {
		...f,
		actor: "system",
		target: null,
		requestId: null,
		metadata: { action: f.action },
		createdAt: 1_700_000_000_000 + f.seq,
		eventId: null,
	};
	return {
		tenant_id: fields.tenantId,
		seq: fields.seq,
		prev_hash: fields.prevHash,
		hash: hash ?? (await chainHash(fields)),
		actor: fields.actor,
		action: fields.action,
		target: fields.target,
		request_id: fields.requestId,
		metadata: JSON.stringify(fields.metadata),
		created_at: fields.createdAt,
		event_id: fields.eventId,
	};
}

/** Records 1..n of a valid chain, actions a1..an. */
async function validChain(n: number): Promise<StoredRecord[]> {
	const records: StoredRecord[] = [];
	for (let seq = 1; seq <= n; seq++) {
		records.push(
			await stored({ tenantId: "t", seq, prevHash: (records.at(-1)?.hash as string) ?? "", action: `a${seq}` }),
		);
	}
	return records;
}

/** The same record renumbered, its own hash recomputed (as a forger who knows the scheme would). */
async function renumbered(r: StoredRecord, seq: number): Promise<StoredRecord> {
	return stored({ tenantId: "t", seq, prevHash: r.prev_hash as string, action: r.action as string });
}

async function check(records: StoredRecord[]) {
	const verifier = new ChainVerifier();
	for (const r of records) if (!(await verifier.add(r))) break;
	return verifier.report();
}

describe("chain verification", () => {
	it("passes an untouched chain and reports its head", async () => {
		const records = await validChain(5);
		expect(await check(records)).toEqual({ ok: true, records: 5, head: { seq: 5, hash: records[4]?.hash } });
		expect(await check([])).toEqual({ ok: true, records: 0, head: null });
	});

	it("reports a modified record: a changed field, metadata that is no JSON, a value of another type", async () => {
		const records = await validChain(5);
		const tampered = [
			{ ...records[2], action: "forged" },
			{ ...records[2], metadata: "{not json" },
			{ ...records[2], created_at: String(records[2]?.created_at) },
			{ ...records[2], hash: "0".repeat(64) },
		] as StoredRecord[];
		for (const r of tampered) {
			const report = await check([records[0], records[1], r, records[3]] as StoredRecord[]);
			expect(report).toMatchObject({ ok: false, records: 2, firstBrokenSeq: 3, reason: "modified" });
		}
	});

	it("reports a deleted record: a gap in seq, at the start or within, or a prev_hash that points at nothing", async () => {
		const [r1, r2, r3, r4, r5] = (await validChain(5)) as [StoredRecord, ...StoredRecord[]];
		expect(await check([r1, r2, r4, r5] as StoredRecord[])).toMatchObject({
			ok: false,
			records: 2,
			firstBrokenSeq: 3,
			reason: "deleted",
		});
		expect(await check([r2, r3] as StoredRecord[])).toMatchObject({ ok: false, firstBrokenSeq: 1, reason: "deleted" });
		// The forger closes the gap and rehashes the later records: their links still point at the deleted one.
		const closed = [r1, r2, await renumbered(r4 as StoredRecord, 3), await renumbered(r5 as StoredRecord, 4)];
		expect(await check(closed as StoredRecord[])).toMatchObject({ ok: false, firstBrokenSeq: 3, reason: "deleted" });
	});

	it("reports an inserted record: slipped in between two, given a skipped seq, or a repeated seq", async () => {
		const [r1, r2, r3, r4] = (await validChain(4)) as [StoredRecord, StoredRecord, StoredRecord, StoredRecord];
		const forged = await stored({ tenantId: "t", seq: 3, prevHash: r2.hash as string, action: "forged" });
		const between = [r1, r2, forged, await renumbered(r3, 4), await renumbered(r4, 5)];
		expect(await check(between)).toMatchObject({ ok: false, records: 2, firstBrokenSeq: 3, reason: "inserted" });
		expect((await check(between)).head?.seq).toBe(2);
		const skipped = await stored({ tenantId: "t", seq: 9, prevHash: r4.hash as string, action: "forged" });
		expect(await check([r1, r2, r3, r4, skipped])).toMatchObject({
			ok: false,
			records: 4,
			firstBrokenSeq: 9,
			reason: "inserted",
		});
		expect(await check([r1, r2, r2])).toMatchObject({ ok: false, firstBrokenSeq: 2, reason: "inserted" });
	});
});

function auditEvent(tenantId: string, data: Record<string, unknown>, fields: Partial<EventEnvelope> = {}) {
	return { ...newEvent({ type: "audit.record", tenantId, source: "test", data }), ...fields };
}

const byEvent = (eventId: string) =>
	database(env.DB).select().from(auditLog).where(eq(auditLog.eventId, eventId)).all();

describe("auditWriter", () => {
	it("handles audit.record and breaker.transition events only", () => {
		expect(auditWriter.name).toBe("audit-writer");
		const event = (type: string) => newEvent({ type, tenantId: "t", source: "test", data: {} });
		expect(auditWriter.handles(event("audit.record"))).toBe(true);
		expect(auditWriter.handles(event("breaker.transition"))).toBe(true);
		expect(auditWriter.handles(event("webhook.received"))).toBe(false);
	});

	it("writes an event once, whether it arrives twice in a row or twice at once", async () => {
		const tenantId = uniqueId("events");
		const event = auditEvent(tenantId, {
			actor: "webhooks",
			action: "webhook.signature_failed",
			target: "endpoint:ep_1",
			metadata: { count: 3 },
		});
		await auditWriter.handle(event, env);
		await auditWriter.handle(event, env);
		const twin = auditEvent(tenantId, { actor: "system", action: "content.blocked" });
		await Promise.all([auditWriter.handle(twin, env), auditWriter.handle(twin, env)]);
		// Even from two isolates racing, the event is written once.
		const raced = auditEvent(tenantId, { actor: "system", action: "content.blocked" });
		await Promise.all([
			auditWriter.handle(raced, { ...env, DB: otherIsolate() }),
			auditWriter.handle(raced, { ...env, DB: otherIsolate() }),
		]);
		expect(await byEvent(event.id)).toHaveLength(1);
		expect(await byEvent(twin.id)).toHaveLength(1);
		expect(await byEvent(raced.id)).toHaveLength(1);
		const records = await chainOf(tenantId);
		expect(records[0]).toMatchObject({
			actor: "webhooks",
			action: "webhook.signature_failed",
			target: "endpoint:ep_1",
			metadata: { count: 3 },
			eventId: event.id,
			createdAt: Date.parse(event.time),
		});
		await expectUnbrokenChain(records, 3);
	});

	it("chains events that arrive out of order in the order they arrive, without a fork or a gap", async () => {
		const tenantId = uniqueId("ordered");
		const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
		const events = [3, 1, 2].map((s) =>
			auditEvent(tenantId, { actor: "system", action: `step-${s}` }, { time: at(s) }),
		);
		for (const e of events) await auditWriter.handle(e, env);
		await auditWriter.handle(events[1] as EventEnvelope, env); // a late redelivery changes nothing
		const records = await chainOf(tenantId);
		expect(records.map((r) => r.action)).toEqual(["step-3", "step-1", "step-2"]);
		expect(records.map((r) => r.createdAt)).toEqual([3, 1, 2].map((s) => Date.parse(at(s))));
		await expectUnbrokenChain(records, 3);
	});

	it("records a breaker transition as the system's, keeping its data", async () => {
		const tenantId = uniqueId("breaker");
		const data = { name: "https://hooks.example/x", from: "closed", to: "open", reason: "failures", failures: 5 };
		const event = newEvent({ type: "breaker.transition", tenantId, source: "breaker/x", data });
		await auditWriter.handle(event, env);
		expect(await byEvent(event.id)).toEqual([
			expect.objectContaining({
				tenantId,
				actor: "system",
				action: "breaker.transition",
				target: "breaker:https://hooks.example/x",
				metadata: data,
				seq: 1,
			}),
		]);
	});

	it("refuses an event whose data does not match its type, writing nothing", async () => {
		const tenantId = uniqueId("invalid");
		await expect(auditWriter.handle(auditEvent(tenantId, { action: "no.actor" }), env)).rejects.toThrow();
		const breaker = newEvent({ type: "breaker.transition", tenantId, source: "x", data: { name: "x" } });
		await expect(auditWriter.handle(breaker, env)).rejects.toThrow();
		expect(await chainOf(tenantId)).toEqual([]);
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
