/**
 * RateLimiter: the Durable Object behind exact admission, one per limited subject (a tenant, an API
 * key, a webhook endpoint). It persists a {@link LeasedBucket} (src/ratelimit/leased-bucket.ts, where
 * the design and the proof that it never over-admits are) in SQLite and serves it over RPC. Instances
 * are named by `rateLimiterName` and reached through {@link rateLimiterFor}.
 *
 * ## LLM budgets
 * A tenant's object also keeps its monthly LLM budget ({@link BudgetLedger}, src/llm/budget/ledger.ts):
 * requests reserve their estimated tokens and cost before calling a provider and settle their actual
 * usage afterwards (client and contract in src/llm/budget). Its state lives in its own tables, beside
 * the bucket's.
 */
import { DurableObject } from "cloudflare:workers";
import { SqlMeter } from "../src/db";
import { type Clock, systemClock } from "../src/lib";
import {
	BudgetLedger,
	type BudgetState,
	type BudgetStore,
	type RenewBudgetRequest,
	RenewBudgetRequestSchema,
	type RenewBudgetResult,
} from "../src/llm";
import {
	type AcquireRequest,
	AcquireRequestSchema,
	type BucketStore,
	type Grant,
	LeasedBucket,
	type LimiterState,
} from "../src/ratelimit";

export { rateLimiterFor } from "../src/ratelimit";

/**
 * Creates `table` WITHOUT ROWID: keyed by a text id, each insert or delete then writes one row, not a
 * row and an index entry. An object made before keeps its rows: its table (same columns, in the same
 * order, keyed by `id`) is rebuilt once.
 */
function withoutRowid(sql: Pick<SqlStorage, "exec">, table: string, columns: string): void {
	const existing = sql
		.exec<{ sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", table)
		.toArray()[0];
	if (existing && /WITHOUT ROWID\s*$/i.test(existing.sql)) return;
	sql.exec(`CREATE TABLE ${table}_rebuilt (${columns}) WITHOUT ROWID`);
	if (existing) {
		// A rowid table let a NULL id in, which a WITHOUT ROWID key refuses: such a row (unreachable by id) is dropped.
		sql.exec(`INSERT INTO ${table}_rebuilt SELECT * FROM ${table} WHERE id IS NOT NULL`);
		sql.exec(`DROP TABLE ${table}`);
	}
	sql.exec(`ALTER TABLE ${table}_rebuilt RENAME TO ${table}`);
}

/**
 * The Durable Object: one {@link LeasedBucket} per limited subject and, for tenants, one
 * {@link BudgetLedger} for the monthly LLM budget, both persisted in SQLite.
 */
export class RateLimiter extends DurableObject<Env> {
	/** The time the bucket and the budget decide at (neither lets it run backwards). */
	#clock: Clock = systemClock;
	#bucket: LeasedBucket = new LeasedBucket();
	/** The tenant's LLM budget: isolates reach it only through {@link renewBudgetLease} and {@link budgetState}. */
	#budget: BudgetLedger = new BudgetLedger();
	readonly #sql: SqlMeter;

	constructor(ctx: DurableObjectState, env: Env) {
		super(ctx, env);
		this.#sql = new SqlMeter(ctx.storage.sql);
		ctx.blockConcurrencyWhile(async () => {
			this.#bucket = this.#load(this.#sql);
			this.#budget = this.#loadBudget(this.#sql);
		});
	}

	/**
	 * Tests only, from inside the object (`runInDurableObject`): its clock and its ledger. Static, so
	 * neither RPC nor a stub's type can reach it.
	 */
	static internals(o: RateLimiter) {
		return {
			ledger: o.#budget,
			now: () => o.#clock(),
			setClock: (clock: Clock) => {
				o.#clock = clock;
			},
		};
	}

	#load(sql: Pick<SqlStorage, "exec">): LeasedBucket {
		sql.exec(`CREATE TABLE IF NOT EXISTS bucket (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			available REAL NOT NULL, outstanding INTEGER NOT NULL, updated_at REAL NOT NULL,
			quota_used INTEGER NOT NULL, period TEXT NOT NULL)`);
		withoutRowid(
			sql,
			"leases",
			"id TEXT PRIMARY KEY, tokens INTEGER NOT NULL, expires_at REAL NOT NULL, period TEXT NOT NULL, expired INTEGER NOT NULL DEFAULT 0",
		);
		const row = sql
			.exec<{ available: number; outstanding: number; updated_at: number; quota_used: number; period: string }>(
				"SELECT available, outstanding, updated_at, quota_used, period FROM bucket WHERE id = 1",
			)
			.toArray()[0];
		const leases = sql
			.exec<{ id: string; tokens: number; expires_at: number; period: string; expired: number }>(
				"SELECT id, tokens, expires_at, period, expired FROM leases",
			)
			.toArray()
			.map((l) => ({
				id: l.id,
				tokens: l.tokens,
				expiresAt: l.expires_at,
				period: l.period,
				expired: l.expired === 1,
			}));
		const store: BucketStore = {
			saveBucket: (b) =>
				sql.exec(
					`INSERT INTO bucket (id, available, outstanding, updated_at, quota_used, period) VALUES (1, ?, ?, ?, ?, ?)
					 ON CONFLICT(id) DO UPDATE SET available = excluded.available, outstanding = excluded.outstanding,
					 updated_at = excluded.updated_at, quota_used = excluded.quota_used, period = excluded.period`,
					b.available,
					b.outstanding,
					b.updatedAt,
					b.quotaUsed,
					b.period,
				),
			saveLease: (l) =>
				sql.exec(
					`INSERT INTO leases (id, tokens, expires_at, period, expired) VALUES (?, ?, ?, ?, ?)
					 ON CONFLICT(id) DO UPDATE SET expired = excluded.expired`,
					l.id,
					l.tokens,
					l.expiresAt,
					l.period,
					l.expired ? 1 : 0,
				),
			deleteLease: (id) => sql.exec("DELETE FROM leases WHERE id = ?", id),
		};
		return new LeasedBucket({
			bucket: row
				? {
						available: row.available,
						outstanding: row.outstanding,
						updatedAt: row.updated_at,
						quotaUsed: row.quota_used,
						period: row.period,
					}
				: undefined,
			leases,
			store,
		});
	}

	#loadBudget(sql: Pick<SqlStorage, "exec">): BudgetLedger {
		sql.exec(`CREATE TABLE IF NOT EXISTS budget (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			used_tokens INTEGER NOT NULL, used_micro_usd INTEGER NOT NULL, period TEXT NOT NULL, clock REAL NOT NULL)`);
		withoutRowid(
			sql,
			"budget_reservations",
			"id TEXT PRIMARY KEY, tokens INTEGER NOT NULL, micro_usd INTEGER NOT NULL, expires_at REAL NOT NULL, period TEXT NOT NULL",
		);
		const row = sql
			.exec<{ used_tokens: number; used_micro_usd: number; period: string; clock: number }>(
				"SELECT used_tokens, used_micro_usd, period, clock FROM budget WHERE id = 1",
			)
			.toArray()[0];
		const reservations = sql
			.exec<{ id: string; tokens: number; micro_usd: number; expires_at: number; period: string }>(
				"SELECT id, tokens, micro_usd, expires_at, period FROM budget_reservations",
			)
			.toArray()
			.map((r) => ({ id: r.id, tokens: r.tokens, microUsd: r.micro_usd, expiresAt: r.expires_at, period: r.period }));
		const store: BudgetStore = {
			saveBudget: (b) =>
				sql.exec(
					`INSERT INTO budget (id, used_tokens, used_micro_usd, period, clock) VALUES (1, ?, ?, ?, ?)
					 ON CONFLICT(id) DO UPDATE SET used_tokens = excluded.used_tokens,
					 used_micro_usd = excluded.used_micro_usd, period = excluded.period, clock = excluded.clock`,
					b.usedTokens,
					b.usedMicroUsd,
					b.period,
					b.clock,
				),
			saveReservation: (r) =>
				sql.exec(
					"INSERT INTO budget_reservations (id, tokens, micro_usd, expires_at, period) VALUES (?, ?, ?, ?, ?)",
					r.id,
					r.tokens,
					r.microUsd,
					r.expiresAt,
					r.period,
				),
			deleteReservation: (id) => sql.exec("DELETE FROM budget_reservations WHERE id = ?", id),
		};
		return new BudgetLedger({
			budget: row
				? { usedTokens: row.used_tokens, usedMicroUsd: row.used_micro_usd, period: row.period, clock: row.clock }
				: undefined,
			reservations,
			store,
		});
	}

	/**
	 * Takes back returned leases, retires expired ones and grants a new lease of up to `want` tokens.
	 * Synchronous from start to end, so two calls never interleave.
	 */
	acquire(input: AcquireRequest): Grant {
		return this.#bucket.acquire(AcquireRequestSchema.parse(input), this.#clock());
	}

	/** The object's bookkeeping, for operators and tests. */
	state(): LimiterState {
		return this.#bucket.state();
	}

	/** Renews an isolate's budget lease: charges what it used, keeps what is in flight, grants more or refuses. */
	renewBudgetLease(input: RenewBudgetRequest): RenewBudgetResult {
		return this.#budget.renew(RenewBudgetRequestSchema.parse(input), this.#clock());
	}

	/** The budget's bookkeeping, for operators and tests. */
	budgetState(): BudgetState {
		return this.#budget.state(this.#clock());
	}

	/** SQLite rows this object has written since it started (benchmarks and tests: bench/rows.mjs). */
	rowsWritten(): number {
		return this.#sql.rowsWritten;
	}
}
