/**
 * The circuit-breaker state machine: one breaker per tenant × target (`tenant:<id>:<target>`) or per
 * gateway-owned target (`gateway:<target>`), named by `breakerName`, its state shared by every isolate.
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
 * `admit` answers an open breaker with `openUntil`. The isolate (client.ts) remembers
 * it and refuses locally until then; only afterwards does it ask again, and the object — not the
 * isolates — decides which callers become probes. The isolate's memory is bounded (LRU) and an open
 * state is trusted for at most a few seconds at a time, so an operator's `reset` reaches every isolate
 * quickly. If the object cannot be reached, the isolate allows the call (fails open) and logs it.
 *
 * The object (durable-objects/circuit-breaker.ts) persists this machine in SQLite, serialises the
 * calls to it and publishes its transitions; it is reached through `circuitBreakerFor` (interface.ts).
 */
import {
	type AdmitResult,
	type BreakerPolicy,
	type BreakerSnapshot,
	type BreakerStateName,
	DEFAULT_BREAKER_POLICY,
	type TransitionReason,
} from "./interface";

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

/** A breaker's bookkeeping as the machine knows it (the object adds its name and pending events). */
export type MachineSnapshot = Omit<BreakerSnapshot, "name" | "pendingEvents">;

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
