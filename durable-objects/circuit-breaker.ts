/**
 * CircuitBreaker: one breaker per tenant × target (`tenant:<id>:<target>`) or per gateway-owned target
 * (`gateway:<target>`), named by `breakerName` in src/breaker, its state shared by every isolate.
 *
 * ## States
 *  - `closed`: calls go through. The object counts outcomes: failures in a row (a success resets the
 *    run) and successes / failures over a rolling window of `windowMs` kept as 10 buckets. It opens
 *    when the run reaches `consecutiveFailures`, or when the window holds at least `minimumVolume`
 *    calls and failures / calls ≥ `failureRate`.
 *  - `open`: every call is refused until `openUntil` = opening time + cooldown. The cooldown is
 *    `cooldownMs` the first time and is multiplied by `cooldownMultiplier` each time a probe fails,
 *    up to `maxCooldownMs`; a close resets it.
 *  - `half_open`: entered by the first `admit` after the cooldown. At most `halfOpenProbes` calls are
 *    admitted at once, each as a *probe* holding a slot (freed by its `record`, or after
 *    `probeTimeoutMs` if it never reports). `successesToClose` successful probes close the breaker;
 *    one failed probe reopens it with a longer cooldown.
 * What is counted: only what callers `record`. Outcomes that no longer apply are ignored — while open
 * (calls admitted before the trip), and while half-open anything but a live probe's outcome.
 *
 * ## Why an open breaker costs no round trip
 * `admit` answers an open breaker with `openUntil`. The isolate (src/breaker/client.ts) remembers
 * it and refuses locally until then; only afterwards does it ask again, and the object — not the
 * isolates — decides which callers become probes. The isolate's memory is bounded (LRU) and an open
 * state is trusted for at most a few seconds at a time, so an operator's `reset` reaches every isolate
 * quickly. If the object cannot be reached, the isolate allows the call (fails open) and logs it.
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
	type BreakerPolicy,
	type BreakerSnapshot,
	type BreakerStateName,
	type BreakerSubject,
	breakerName,
	DEFAULT_BREAKER_POLICY,
	parseBreakerName,
	type RecordRequest,
	RecordRequestSchema,
	type TransitionReason,
} from "../src/breaker";
import { SqlMeter } from "../src/db";
import { type EventEnvelope, EventEnvelopeSchema, newEvent, publish } from "../src/events";
import { log } from "../src/http";

export type { AdmitResult, BreakerPolicy, BreakerSnapshot };

/** The breaker's scalar state, as persisted. */
export interface BreakerRow {
	state: BreakerStateName;
	since: number;
	openUntil: number;
	consecutiveFailures: number;
	probeSuccesses: number;
	reopenings: number;
	seq: number;
	/** The latest time the breaker has seen: its clock never runs backwards. */
	clock: number;
}

/** Outcomes in one slice of the rolling window, which starts at `start`. */
export interface WindowBucket {
	start: number;
	successes: number;
	failures: number;
}

/** A half-open probe slot. */
export interface ProbeSlot {
	id: string;
	expiresAt: number;
}

/** One state change, as handed to the object to publish. */
export interface Transition {
	from: BreakerStateName;
	to: BreakerStateName;
	reason: TransitionReason;
	at: number;
	seq: number;
	/** Failures in a row when it happened. */
	consecutiveFailures: number;
	/** Failures and calls in the rolling window when it happened. */
	failures: number;
	volume: number;
	openUntil?: number;
	cooldownMs?: number;
	probeSuccesses: number;
	traceparent?: string;
}

/** Where a {@link BreakerMachine} writes its changes (the Durable Object's SQLite; nothing in tests). */
export interface BreakerStore {
	saveState(row: BreakerRow): void;
	saveBucket(bucket: WindowBucket): void;
	deleteBucket(start: number): void;
	clearBuckets(): void;
	saveProbe(probe: ProbeSlot): void;
	deleteProbe(id: string): void;
	clearProbes(): void;
}

/** The rolling window is kept as this many buckets. */
export const WINDOW_BUCKETS = 10;
/** How long after a failed send the outbox is tried again (and the safety-net alarm for a send cut short). */
export const OUTBOX_RETRY_MS = 5_000;
/** Transition events kept while the queue refuses them; beyond this the oldest are dropped (and logged). */
export const MAX_OUTBOX = 1_000;

const CLOSED_ROW: BreakerRow = {
	state: "closed",
	since: 0,
	openUntil: 0,
	consecutiveFailures: 0,
	probeSuccesses: 0,
	reopenings: 0,
	seq: 0,
	clock: 0,
};

type MachineSnapshot = Omit<BreakerSnapshot, "name" | "pendingEvents">;

/**
 * The state machine described at the top of this file, with the clock passed in. Pure apart from
 * the store it writes to and the transitions it reports, so it can be driven by simulated time.
 */
export class BreakerMachine {
	readonly #row: BreakerRow;
	#buckets: WindowBucket[];
	readonly #probes = new Map<string, number>();
	readonly #store: BreakerStore | undefined;
	readonly #newId: () => string;
	readonly #onTransition: (t: Transition) => void;

	constructor(
		options: {
			row?: BreakerRow;
			buckets?: WindowBucket[];
			probes?: ProbeSlot[];
			store?: BreakerStore;
			newId?: () => string;
			onTransition?: (t: Transition) => void;
		} = {},
	) {
		this.#row = { ...(options.row ?? CLOSED_ROW) };
		this.#buckets = (options.buckets ?? []).map((b) => ({ ...b })).sort((a, b) => a.start - b.start);
		for (const p of options.probes ?? []) this.#probes.set(p.id, p.expiresAt);
		this.#store = options.store;
		this.#newId = options.newId ?? (() => crypto.randomUUID());
		this.#onTransition = options.onTransition ?? (() => {});
	}

	/** Advances the breaker's clock, which never runs backwards (a restart elsewhere, a clock step). */
	#tick(now: number): number {
		this.#row.clock = Math.max(this.#row.clock, now);
		return this.#row.clock;
	}

	#windowCounts(): { successes: number; failures: number } {
		let successes = 0;
		let failures = 0;
		for (const b of this.#buckets) {
			successes += b.successes;
			failures += b.failures;
		}
		return { successes, failures };
	}

	#transition(
		to: BreakerStateName,
		reason: TransitionReason,
		now: number,
		policy: BreakerPolicy,
		traceparent: string | undefined,
	): void {
		const from = this.#row.state;
		const counts = this.#windowCounts();
		const transition: Transition = {
			from,
			to,
			reason,
			at: now,
			seq: this.#row.seq + 1,
			consecutiveFailures: this.#row.consecutiveFailures,
			failures: counts.failures,
			volume: counts.successes + counts.failures,
			probeSuccesses: this.#row.probeSuccesses,
			...(traceparent ? { traceparent } : {}),
		};
		const row = this.#row;
		row.state = to;
		row.since = now;
		row.seq = transition.seq;
		row.openUntil = 0;
		row.probeSuccesses = 0;
		if (to === "open") {
			const cap = Math.max(policy.cooldownMs, policy.maxCooldownMs);
			const cooldownMs = Math.min(cap, Math.round(policy.cooldownMs * policy.cooldownMultiplier ** row.reopenings));
			row.openUntil = now + cooldownMs;
			transition.openUntil = row.openUntil;
			transition.cooldownMs = cooldownMs;
		}
		if (to === "closed") row.reopenings = 0;
		// Every state starts with fresh counts: a reopened breaker is judged on what happens after it closes.
		row.consecutiveFailures = 0;
		this.#buckets = [];
		this.#probes.clear();
		this.#store?.clearBuckets();
		this.#store?.clearProbes();
		this.#store?.saveState(row);
		this.#onTransition(transition);
	}

	/** Open → half-open once the cooldown has passed. */
	#advance(now: number, policy: BreakerPolicy, traceparent: string | undefined): void {
		if (this.#row.state === "open" && now >= this.#row.openUntil) {
			this.#transition("half_open", "cooldown-elapsed", now, policy, traceparent);
		}
	}

	#expireProbes(now: number): void {
		for (const [id, expiresAt] of this.#probes) {
			if (expiresAt <= now) {
				this.#probes.delete(id);
				this.#store?.deleteProbe(id);
			}
		}
	}

	/** Admits or refuses one call; while half-open, an admitted call holds a probe slot. */
	admit(request: { policy: BreakerPolicy; traceparent?: string }, clock: number): AdmitResult {
		const { policy, traceparent } = request;
		const now = this.#tick(clock);
		this.#advance(now, policy, traceparent);
		const row = this.#row;
		if (row.state === "closed") return { allowed: true, state: "closed", probe: false };
		if (row.state === "open") {
			return {
				allowed: false,
				state: "open",
				probe: false,
				openUntil: row.openUntil,
				retryAfterMs: row.openUntil - now,
			};
		}
		this.#expireProbes(now);
		if (this.#probes.size < policy.halfOpenProbes) {
			const probeId = this.#newId();
			const expiresAt = now + policy.probeTimeoutMs;
			this.#probes.set(probeId, expiresAt);
			this.#store?.saveProbe({ id: probeId, expiresAt });
			return { allowed: true, state: "half_open", probe: true, probeId };
		}
		const soonest = Math.min(...this.#probes.values());
		return { allowed: false, state: "half_open", probe: false, retryAfterMs: Math.max(1, soonest - now) };
	}

	/** Counts one call's outcome and applies any transition it causes. */
	record(
		request: {
			policy: BreakerPolicy;
			success: boolean;
			probe: boolean;
			probeId?: string;
			count?: number;
			release?: boolean;
			traceparent?: string;
		},
		clock: number,
	): MachineSnapshot {
		const { policy, success, traceparent } = request;
		const now = this.#tick(clock);
		this.#advance(now, policy, traceparent);
		const row = this.#row;

		if (request.release) {
			const slot = request.probe ? (request.probeId ?? this.#probes.keys().next().value) : undefined;
			if (slot !== undefined && this.#probes.delete(slot)) this.#store?.deleteProbe(slot);
			return this.snapshot();
		}
		if (row.state === "closed") {
			this.#count(success, now, policy, success ? (request.count ?? 1) : 1);
			const { successes, failures } = this.#windowCounts();
			const volume = successes + failures;
			if (row.consecutiveFailures >= policy.consecutiveFailures) {
				this.#transition("open", "consecutive-failures", now, policy, traceparent);
			} else if (volume >= policy.minimumVolume && failures / volume >= policy.failureRate) {
				this.#transition("open", "failure-rate", now, policy, traceparent);
			} else {
				this.#store?.saveState(row);
			}
		} else if (row.state === "half_open" && request.probe) {
			this.#expireProbes(now);
			const slot = request.probeId ?? this.#probes.keys().next().value;
			// A probe whose slot expired, or from an earlier half-open spell, no longer counts.
			if (slot !== undefined && this.#probes.delete(slot)) {
				this.#store?.deleteProbe(slot);
				if (!success) {
					row.reopenings++;
					this.#transition("open", "probe-failed", now, policy, traceparent);
				} else if (++row.probeSuccesses >= policy.successesToClose) {
					this.#transition("closed", "probes-succeeded", now, policy, traceparent);
				} else {
					this.#store?.saveState(row);
				}
			}
		}
		return this.snapshot();
	}

	/** Adds `n` outcomes to the rolling window and to the run of failures. */
	#count(success: boolean, now: number, policy: BreakerPolicy, n = 1): void {
		const width = policy.windowMs / WINDOW_BUCKETS;
		while (this.#buckets.length > 0) {
			const oldest = this.#buckets[0] as WindowBucket;
			// Keep the buckets that overlap (now − windowMs, now], and never more than a few windows' worth.
			if (oldest.start + width > now - policy.windowMs && this.#buckets.length <= 4 * WINDOW_BUCKETS) break;
			this.#buckets.shift();
			this.#store?.deleteBucket(oldest.start);
		}
		const start = Math.floor(now / width) * width;
		let bucket = this.#buckets.at(-1);
		if (!bucket || bucket.start < start) {
			bucket = { start, successes: 0, failures: 0 };
			this.#buckets.push(bucket);
		}
		if (success) bucket.successes += n;
		else bucket.failures += n;
		this.#store?.saveBucket(bucket);
		this.#row.consecutiveFailures = success ? 0 : this.#row.consecutiveFailures + 1;
	}

	/** Closes the breaker and forgets every count (operators). */
	reset(clock: number, traceparent?: string): MachineSnapshot {
		const now = this.#tick(clock);
		if (this.#row.state !== "closed") {
			this.#transition("closed", "reset", now, DEFAULT_BREAKER_POLICY, traceparent);
		} else {
			this.#row.consecutiveFailures = 0;
			this.#row.reopenings = 0;
			this.#buckets = [];
			this.#store?.clearBuckets();
			this.#store?.saveState(this.#row);
		}
		return this.snapshot();
	}

	/** The bookkeeping as of `clock` (default: the latest time the breaker has seen). */
	snapshot(clock = 0): MachineSnapshot {
		const now = this.#tick(clock);
		const row = this.#row;
		return {
			state: row.state,
			since: row.since,
			...(row.state === "open" ? { openUntil: row.openUntil, retryAfterMs: Math.max(0, row.openUntil - now) } : {}),
			consecutiveFailures: row.consecutiveFailures,
			window: this.#windowCounts(),
			probesInFlight: this.#probes.size,
			probeSuccesses: row.probeSuccesses,
			reopenings: row.reopenings,
			seq: row.seq,
		};
	}
}

/** The Durable Object: one {@link BreakerMachine} per breaker, persisted in SQLite, publishing its transitions. */
export class CircuitBreaker extends DurableObject<Env> {
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
		const parsed = parseBreakerName(this.#name);
		const event = EventEnvelopeSchema.safeParse(
			newEvent({
				type: "breaker.transition",
				tenantId: parsed?.scope === "tenant" ? parsed.tenantId : this.env.OPERATOR_TENANT,
				source: `breaker/${this.#name}`,
				...(t.traceparent ? { traceparent: t.traceparent } : {}),
				data: {
					name: this.#name,
					target: parsed?.target ?? null,
					from: t.from,
					to: t.to,
					reason: t.reason,
					seq: t.seq,
					at: new Date(t.at).toISOString(),
					failures: t.failures,
					volume: t.volume,
					consecutiveFailures: t.consecutiveFailures,
					probeSuccesses: t.probeSuccesses,
					...(t.openUntil !== undefined ? { openUntil: new Date(t.openUntil).toISOString() } : {}),
					...(t.cooldownMs !== undefined ? { cooldownMs: t.cooldownMs } : {}),
				},
			}),
		);
		if (!event.success) {
			log("error", "breaker transition event is invalid; not published", { breaker: this.#name, seq: t.seq });
			return;
		}
		const sql = this.#sql;
		sql.exec("INSERT INTO outbox (body) VALUES (?)", JSON.stringify(event.data));
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
						reason: err instanceof Error ? err.message : String(err),
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

	#view(snapshot: ReturnType<BreakerMachine["snapshot"]>): BreakerSnapshot {
		return { name: this.#name, ...snapshot, pendingEvents: this.#pending() };
	}

	/**
	 * Admits or refuses one call. While half-open, an admitted call is a probe and holds a slot until
	 * its outcome is recorded. Synchronous from start to end, so two calls never interleave.
	 */
	admit(input: AdmitRequest): AdmitResult {
		const request = AdmitRequestSchema.parse(input);
		return this.#machine.admit(request, request.now ?? Date.now());
	}

	/** Counts one admitted call's outcome and answers the breaker's new state. */
	record(input: RecordRequest): BreakerSnapshot {
		const request = RecordRequestSchema.parse(input);
		return this.#view(this.#machine.record(request, request.now ?? Date.now()));
	}

	/** The breaker's bookkeeping, for operators and tests. */
	state(): BreakerSnapshot {
		return this.#view(this.#machine.snapshot(Date.now()));
	}

	/** Closes the breaker and clears its counts (admin). Isolates that saw it open learn within seconds. */
	reset(input: { traceparent?: string } = {}): BreakerSnapshot {
		return this.#view(this.#machine.reset(Date.now(), input.traceparent));
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

/** The CircuitBreaker stub for a tenant's or the gateway's target (names come from {@link breakerName}). */
export function circuitBreakerFor(env: Env, subject: BreakerSubject) {
	return env.CIRCUIT_BREAKER.getByName(breakerName(subject));
}
