/**
 * CircuitBreaker: the Durable Object that holds one breaker ({@link BreakerMachine}, src/breaker/machine.ts,
 * where the states and the design are described) per tenant × target or gateway-owned target, its state
 * shared by every isolate. Here: its SQLite storage, its RPC methods, and the outbox of its transition
 * events. Instances are named by `breakerName` and reached through {@link circuitBreakerFor}.
 *
 * ## Concurrency and durability
 * `admit`, `record`, `state` and `reset` are synchronous from start to end, so calls are serialised:
 * however many isolates ask at once, no more than `halfOpenProbes` probes hold slots. Every change
 * is written to SQLite in the same turn (one implicit transaction), so the state survives eviction.
 * Each transition also writes a `breaker.transition` event to an outbox table in that same turn;
 * the outbox is then sent to the EVENTS queue in the background (and retried from an alarm), so a
 * failing queue never fails `admit` or `record` and never loses a transition. Events may arrive more
 * than once (same id) or out of order; `data.seq` orders them.
 */
import { DurableObject } from "cloudflare:workers";
import {
	type AdmitRequest,
	AdmitRequestSchema,
	type AdmitResult,
	BreakerMachine,
	type BreakerSnapshot,
	type BreakerStateName,
	type BreakerStore,
	type MachineSnapshot,
	type RecordRequest,
	RecordRequestSchema,
	type Transition,
	transitionEvent,
} from "../src/breaker";
import { SqlMeter } from "../src/db";
import { type EventEnvelope, publish } from "../src/events";
import { log } from "../src/http";
import { type Clock, errorMessage, systemClock } from "../src/lib";

export { circuitBreakerFor } from "../src/breaker";

/** How long after a failed send the outbox is tried again (and the safety-net alarm for a send cut short). */
export const OUTBOX_RETRY_MS = 5_000;
/** Transition events kept while the queue refuses them; beyond this the oldest are dropped (and logged). */
export const MAX_OUTBOX = 1_000;

/** The Durable Object: one {@link BreakerMachine} per breaker, persisted in SQLite, publishing its transitions. */
export class CircuitBreaker extends DurableObject<Env> {
	/** The time the breaker decides at (it never runs backwards: the machine clamps it). */
	#clock: Clock = systemClock;
	#machine: BreakerMachine = new BreakerMachine();
	#name: string;
	#flushing: Promise<void> | null = null;
	#flushRequested = false;
	readonly #sql: SqlMeter;

	constructor(ctx: DurableObjectState, env: Env) {
		super(ctx, env);
		this.#name = ctx.id.name ?? ctx.id.toString();
		this.#sql = new SqlMeter(ctx.storage.sql);
		ctx.blockConcurrencyWhile(async () => {
			this.#machine = this.#load(this.#sql);
		});
	}

	/** Tests only, from inside the object (`runInDurableObject`): static, so neither RPC nor a stub's type can reach it. */
	static internals(o: CircuitBreaker) {
		return {
			setClock: (clock: Clock) => {
				o.#clock = clock;
			},
		};
	}

	#load(sql: Pick<SqlStorage, "exec">): BreakerMachine {
		sql.exec(`CREATE TABLE IF NOT EXISTS breaker (
			id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL,
			state TEXT NOT NULL, since REAL NOT NULL, open_until REAL NOT NULL,
			consecutive_failures INTEGER NOT NULL, probe_successes INTEGER NOT NULL,
			reopenings INTEGER NOT NULL, seq INTEGER NOT NULL, clock REAL NOT NULL)`);
		sql.exec(`CREATE TABLE IF NOT EXISTS window_buckets (
			start REAL PRIMARY KEY, successes INTEGER NOT NULL, failures INTEGER NOT NULL)`);
		sql.exec("CREATE TABLE IF NOT EXISTS probes (id TEXT PRIMARY KEY, expires_at REAL NOT NULL)");
		sql.exec("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)");

		const row = sql
			.exec<{
				name: string;
				state: BreakerStateName;
				since: number;
				open_until: number;
				consecutive_failures: number;
				probe_successes: number;
				reopenings: number;
				seq: number;
				clock: number;
			}>("SELECT * FROM breaker WHERE id = 1")
			.toArray()[0];
		// An alarm may wake the object by id alone; the stored name is the fallback.
		if (row && this.ctx.id.name === undefined) this.#name = row.name;
		const buckets = sql
			.exec<{ start: number; successes: number; failures: number }>(
				"SELECT start, successes, failures FROM window_buckets",
			)
			.toArray();
		const probes = sql
			.exec<{ id: string; expires_at: number }>("SELECT id, expires_at FROM probes")
			.toArray()
			.map((p) => ({ id: p.id, expiresAt: p.expires_at }));
		const store: BreakerStore = {
			saveState: (r) =>
				sql.exec(
					`INSERT INTO breaker (id, name, state, since, open_until, consecutive_failures, probe_successes, reopenings, seq, clock)
					 VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)
					 ON CONFLICT(id) DO UPDATE SET state = excluded.state, since = excluded.since,
					 open_until = excluded.open_until, consecutive_failures = excluded.consecutive_failures,
					 probe_successes = excluded.probe_successes, reopenings = excluded.reopenings,
					 seq = excluded.seq, clock = excluded.clock`,
					this.#name,
					r.state,
					r.since,
					r.openUntil,
					r.consecutiveFailures,
					r.probeSuccesses,
					r.reopenings,
					r.seq,
					r.clock,
				),
			saveBucket: (b) =>
				sql.exec(
					`INSERT INTO window_buckets (start, successes, failures) VALUES (?, ?, ?)
					 ON CONFLICT(start) DO UPDATE SET successes = excluded.successes, failures = excluded.failures`,
					b.start,
					b.successes,
					b.failures,
				),
			deleteBucket: (start) => sql.exec("DELETE FROM window_buckets WHERE start = ?", start),
			clearBuckets: () => sql.exec("DELETE FROM window_buckets"),
			saveProbe: (p) => sql.exec("INSERT INTO probes (id, expires_at) VALUES (?, ?)", p.id, p.expiresAt),
			deleteProbe: (id) => sql.exec("DELETE FROM probes WHERE id = ?", id),
			clearProbes: () => sql.exec("DELETE FROM probes"),
		};
		return new BreakerMachine({
			row: row
				? {
						state: row.state,
						since: row.since,
						openUntil: row.open_until,
						consecutiveFailures: row.consecutive_failures,
						probeSuccesses: row.probe_successes,
						reopenings: row.reopenings,
						seq: row.seq,
						clock: row.clock,
					}
				: undefined,
			buckets,
			probes,
			store,
			onTransition: (t) => this.#enqueue(t),
		});
	}

	/** Writes the transition's event to the outbox (same turn as the state change), then sends it in the background. */
	#enqueue(t: Transition): void {
		const event = transitionEvent(this.#name, t, this.env.OPERATOR_TENANT);
		if (!event) {
			log("error", "breaker transition event is invalid; not published", { breaker: this.#name, seq: t.seq });
			return;
		}
		const sql = this.#sql;
		sql.exec("INSERT INTO outbox (body) VALUES (?)", JSON.stringify(event));
		const dropped = sql
			.exec("DELETE FROM outbox WHERE seq <= (SELECT MAX(seq) FROM outbox) - ? RETURNING seq", MAX_OUTBOX)
			.toArray().length;
		if (dropped > 0) log("error", "breaker event outbox full; oldest events dropped", { breaker: this.#name, dropped });
		// Safety net: if the object is evicted before the send below completes, the alarm sends it.
		void this.ctx.storage.setAlarm(Date.now() + OUTBOX_RETRY_MS);
		this.ctx.waitUntil(this.#flush());
	}

	/** Sends the outbox; at most one send runs at a time, and a request made meanwhile is served after it. */
	#flush(): Promise<void> {
		this.#flushRequested = true;
		this.#flushing ??= this.#drain();
		return this.#flushing;
	}

	async #drain(): Promise<void> {
		const sql = this.#sql;
		try {
			while (this.#flushRequested) {
				this.#flushRequested = false;
				const rows = sql
					.exec<{ seq: number; body: string }>("SELECT seq, body FROM outbox ORDER BY seq LIMIT 100")
					.toArray();
				if (rows.length === 0) return;
				try {
					await publish(
						this.env,
						rows.map((r) => JSON.parse(r.body) as EventEnvelope),
					);
				} catch (err) {
					// The state change stands; the events stay in the outbox for the alarm to retry.
					log("error", "breaker transition events not published; will retry", {
						breaker: this.#name,
						pending: rows.length,
						reason: errorMessage(err),
					});
					await this.ctx.storage.setAlarm(Date.now() + OUTBOX_RETRY_MS);
					return;
				}
				for (const r of rows) sql.exec("DELETE FROM outbox WHERE seq = ?", r.seq);
				if (rows.length === 100) this.#flushRequested = true;
			}
		} finally {
			this.#flushing = null;
		}
	}

	#pending(): number {
		return this.#sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM outbox").one().n;
	}

	#view(snapshot: MachineSnapshot): BreakerSnapshot {
		return { name: this.#name, ...snapshot, pendingEvents: this.#pending() };
	}

	/**
	 * Admits or refuses one call. While half-open, an admitted call is a probe and holds a slot until
	 * its outcome is recorded. Synchronous from start to end, so two calls never interleave.
	 */
	admit(input: AdmitRequest): AdmitResult {
		return this.#machine.admit(AdmitRequestSchema.parse(input), this.#clock());
	}

	/** Counts one admitted call's outcome and answers the breaker's new state. */
	record(input: RecordRequest): BreakerSnapshot {
		return this.#view(this.#machine.record(RecordRequestSchema.parse(input), this.#clock()));
	}

	/** The breaker's bookkeeping, for operators and tests. */
	state(): BreakerSnapshot {
		return this.#view(this.#machine.snapshot(this.#clock()));
	}

	/** Closes the breaker and clears its counts (admin). Isolates that saw it open learn within seconds. */
	reset(input: { traceparent?: string } = {}): BreakerSnapshot {
		return this.#view(this.#machine.reset(this.#clock(), input.traceparent));
	}

	/** SQLite rows this object has written since it started (benchmarks and tests: bench/rows.mjs). */
	rowsWritten(): number {
		return this.#sql.rowsWritten;
	}

	/** Retries the outbox after a failed (or interrupted) send. */
	override async alarm(): Promise<void> {
		await this.#flush();
	}
}
