/**
 * The isolate's side of the circuit breakers (design at the top of machine.ts).
 * An open breaker is refused from memory until its cooldown ends, so it costs no Durable Object round
 * trip; everything else asks the object, which alone decides who probes a half-open target.
 *
 * When the object cannot be reached (an error, or no answer within `timeoutMs`), the breaker fails
 * OPEN: the call is allowed, a warning is logged once, and for `unavailableBackoffMs` this isolate
 * neither asks nor records for that breaker. A breaker protects an upstream; it must never become the
 * outage itself. Records made meanwhile are lost, which can only delay a trip, never cause one.
 */

import { log } from "../http";
import { errorMessage, Lru, perIsolate, sleep, TIMED_OUT, within } from "../lib";
import {
	type AdmitRequest,
	type AdmitResult,
	type BreakerDecision,
	type BreakerOutcome,
	type BreakerPolicy,
	type BreakerPolicyInput,
	BreakerPolicySchema,
	type BreakerSnapshot,
	type Breakers,
	circuitBreakerFor,
	type RecordRequest,
	type RecordResult,
} from "./interface";

/** What the client needs of a CircuitBreaker stub. */
export interface BreakerStub {
	admit(input: AdmitRequest): Promise<AdmitResult>;
	record(input: RecordRequest): Promise<BreakerSnapshot>;
}

export interface BreakerClientOptions {
	/** Makes a stub for one call. A stub belongs to the request that made it: never cache one across requests. */
	stub: (name: string) => BreakerStub;
	now?: () => number;
	/** Most breakers remembered; the least recently used is forgotten (it is asked again next time). */
	maxBreakers?: number;
	/** A call to the object that has not answered after this long counts as unreachable. */
	timeoutMs?: number;
	/** After the object could not be reached, fail open without asking it for this long. */
	unavailableBackoffMs?: number;
	/** An open breaker is refused locally for at most this long at a time, so a `reset` reaches every isolate. */
	maxOpenCacheMs?: number;
	/** A half-open refusal (all probe slots taken) is repeated locally for at most this long. */
	maxDenyCacheMs?: number;
	/**
	 * A closed answer is trusted locally for this long, saving the `admit` round trip; meanwhile a trip
	 * made through another isolate is learned only from this isolate's next `record`. 0 = always ask.
	 */
	closedTrustMs?: number;
}

interface Local {
	/** Refuse locally until this (isolate clock): the object said open. */
	openUntil: number;
	/** The object's `openUntil`, reported with local refusals. */
	objectOpenUntil: number;
	/** Refuse locally until this: every probe slot was taken. */
	deniedUntil: number;
	/** Admit locally until this: the object said closed (only with `closedTrustMs`). */
	closedUntil: number;
	unavailableUntil: number;
	unavailableReason: string;
	/** Successes counted here while closed was trusted, not yet sent (see `record`). */
	pendingSuccesses: number;
	/** A record call is waiting to send the pending successes. */
	flushing: boolean;
	/** The newest transition count a record answer carried: an older answer arriving later is not learned. */
	seq: number;
	/** When a failure was last recorded here: a closed answer to a call sent before it is not trusted. */
	failedAt: number;
	/** A failure's record on its way: an `admit` waits for it, so it cannot overtake it to the object. */
	recording: Promise<unknown> | null;
}

/** Circuit breakers for one isolate. Create one per isolate (module scope); see {@link breakerClientFor}. */
export class BreakerClient implements Breakers {
	readonly #breakers: Lru<string, Local>;
	readonly #policies = new WeakMap<object, BreakerPolicy>();
	readonly #stub: (name: string) => BreakerStub;
	readonly #now: () => number;
	readonly #timeout: number;
	readonly #backoff: number;
	readonly #maxOpen: number;
	readonly #maxDeny: number;
	readonly #closedTrust: number;

	constructor(options: BreakerClientOptions) {
		this.#stub = options.stub;
		this.#now = options.now ?? Date.now;
		const max = options.maxBreakers ?? 10_000;
		this.#timeout = options.timeoutMs ?? 1000;
		this.#backoff = options.unavailableBackoffMs ?? 1000;
		this.#maxOpen = options.maxOpenCacheMs ?? 5000;
		this.#maxDeny = options.maxDenyCacheMs ?? 250;
		this.#closedTrust = options.closedTrustMs ?? 0;
		if (
			!(max >= 1) ||
			!(this.#timeout > 0) ||
			!(this.#backoff >= 0) ||
			!(this.#maxOpen >= 0) ||
			!(this.#maxDeny >= 0) ||
			!(this.#closedTrust >= 0)
		) {
			throw new Error("BreakerClient: invalid options");
		}
		this.#breakers = new Lru(max);
	}

	/** Validates a policy once per policy object; a bad policy is a programming error and throws. */
	#policy(input: BreakerPolicyInput): BreakerPolicy {
		let policy = this.#policies.get(input);
		if (!policy) {
			policy = BreakerPolicySchema.parse(input);
			this.#policies.set(input, policy);
		}
		return policy;
	}

	#local(name: string): Local {
		let local = this.#breakers.get(name);
		if (local) return local;
		local = {
			openUntil: 0,
			objectOpenUntil: 0,
			deniedUntil: 0,
			closedUntil: 0,
			unavailableUntil: 0,
			unavailableReason: "",
			pendingSuccesses: 0,
			flushing: false,
			seq: 0,
			failedAt: Number.NEGATIVE_INFINITY,
			recording: null,
		};
		this.#breakers.set(name, local);
		return local;
	}

	/** Remembers what the object said, measured from when the question was sent (so never for too long). */
	#learn(
		local: Local,
		answer: { state: string; allowed?: boolean; openUntil?: number; retryAfterMs?: number },
		sentAt: number,
	) {
		local.openUntil = 0;
		local.deniedUntil = 0;
		local.closedUntil = 0;
		if (answer.state === "open") {
			local.openUntil = sentAt + Math.min(Math.max(0, answer.retryAfterMs ?? 0), this.#maxOpen);
			local.objectOpenUntil = answer.openUntil ?? 0;
		} else if (answer.state === "half_open" && answer.allowed === false) {
			local.deniedUntil = sentAt + Math.min(Math.max(0, answer.retryAfterMs ?? 0), this.#maxDeny);
		} else if (answer.state === "closed" && sentAt >= local.failedAt) {
			local.closedUntil = sentAt + this.#closedTrust;
		}
	}

	#unavailable(name: string, local: Local, reason: string): void {
		local.unavailableUntil = this.#now() + this.#backoff;
		local.unavailableReason = reason;
		log("warn", "circuit breaker unreachable; failing open", {
			breaker: name,
			reason,
			backoffMs: this.#backoff,
		});
	}

	/** Runs one call on the object, bounded by the timeout; `null` (and the breaker marked unreachable) on failure. */
	async #call<T>(name: string, local: Local, call: (stub: BreakerStub) => Promise<T>): Promise<T | null> {
		try {
			// A stub belongs to the request that made it: make one per call, never cache it across requests.
			const answer = await within(call(this.#stub(name)), this.#timeout);
			if (answer !== TIMED_OUT) return answer;
			this.#unavailable(name, local, `the circuit breaker did not answer within ${this.#timeout} ms`);
		} catch (err) {
			this.#unavailable(name, local, errorMessage(err));
		}
		return null;
	}

	/**
	 * Whether to make a call. An open breaker (or a half-open one with every probe slot taken) is
	 * refused from memory; otherwise the object decides, and may make this call a probe. Fails open.
	 */
	async admit(
		name: string,
		policyInput: BreakerPolicyInput,
		context: { traceparent?: string } = {},
	): Promise<BreakerDecision> {
		const policy = this.#policy(policyInput);
		const local = this.#local(name);
		const now = this.#now();
		if (now < local.openUntil) {
			return {
				allowed: false,
				state: "open",
				probe: false,
				openUntil: local.objectOpenUntil,
				retryAfterMs: local.openUntil - now,
				source: "local",
			};
		}
		if (now < local.deniedUntil) {
			return {
				allowed: false,
				state: "half_open",
				probe: false,
				retryAfterMs: local.deniedUntil - now,
				source: "local",
			};
		}
		if (now < local.unavailableUntil) return failOpen(local);
		if (now < local.closedUntil) return { allowed: true, state: "closed", probe: false, source: "local" };
		// A failure recorded here must reach the object first: it may be the one that opens the breaker.
		if (local.recording) {
			await within(local.recording, this.#timeout);
			if (this.#now() < local.openUntil) return this.admit(name, policyInput, context);
		}

		const request: AdmitRequest = { policy, ...(context.traceparent ? { traceparent: context.traceparent } : {}) };
		const seq = local.seq;
		const answer = await this.#call(name, local, (stub) => stub.admit(request));
		if (!answer) return failOpen(local);
		// A record answered meanwhile may know better (an opening): only learn from an admit if none did.
		if (local.seq === seq) this.#learn(local, answer, now);
		return { ...answer, source: "object" };
	}

	/**
	 * Reports an admitted call's outcome (pass the decision's `probe` and `probeId`). Callers that do not
	 * need the answer may hand the promise to `waitUntil`. Never throws for an unreachable object.
	 */
	async record(name: string, policyInput: BreakerPolicyInput, outcome: BreakerOutcome): Promise<RecordResult> {
		const policy = this.#policy(policyInput);
		const local = this.#local(name);
		const now = this.#now();
		if (now < local.unavailableUntil) return { state: "unknown", unavailable: local.unavailableReason };
		// While closed is trusted, plain successes are counted here and sent together half a trust period
		// later by the record call that found none pending (its caller keeps it alive with waitUntil),
		// so a healthy target costs the object two writes per isolate per period, not one per call. The
		// answer renews the trust before it lapses, so steady traffic never goes back to `admit`.
		if (this.#closedTrust > 0 && outcome.success && !outcome.probe && !outcome.release && now < local.closedUntil) {
			local.pendingSuccesses++;
			if (local.flushing) return { state: "closed" };
			local.flushing = true;
			// Half a period, or sooner if the trust ends sooner: the answer must renew it before it lapses.
			const delay = Math.max(0, Math.min(this.#closedTrust / 2, local.closedUntil - now - this.#closedTrust / 4));
			await sleep(delay);
			local.flushing = false;
			return this.#flush(name, policy, local);
		}
		const failure = !outcome.success && !outcome.release;
		if (failure) {
			// It may open the breaker: trust closed no more until the object has heard of it.
			local.closedUntil = 0;
			local.failedAt = now;
		}
		const sending = (async () => {
			// Anything else goes at once, after the pending successes, so the object sees outcomes in order.
			if (local.pendingSuccesses > 0) await this.#flush(name, policy, local);
			return this.#send(name, local, {
				policy,
				success: outcome.success,
				probe: outcome.probe ?? false,
				...(outcome.release ? { release: true } : {}),
				...(outcome.probeId ? { probeId: outcome.probeId } : {}),
				...(outcome.traceparent ? { traceparent: outcome.traceparent } : {}),
			});
		})();
		if (!failure) return sending;
		local.recording = sending;
		try {
			return await sending;
		} finally {
			if (local.recording === sending) local.recording = null;
		}
	}

	/** Sends the successes counted locally, if any. */
	async #flush(name: string, policy: BreakerPolicy, local: Local): Promise<RecordResult> {
		const count = local.pendingSuccesses;
		if (count === 0) return { state: "closed" };
		local.pendingSuccesses = 0;
		return this.#send(name, local, { policy, success: true, probe: false, count });
	}

	async #send(name: string, local: Local, request: RecordRequest): Promise<RecordResult> {
		const sentAt = this.#now();
		if (sentAt < local.unavailableUntil) return { state: "unknown", unavailable: local.unavailableReason };
		const snapshot = await this.#call(name, local, (stub) => stub.record(request));
		if (!snapshot) return { state: "unknown", unavailable: local.unavailableReason };
		// Two records of one isolate may answer out of order: only the newer state is learned.
		if (snapshot.seq >= local.seq) {
			local.seq = snapshot.seq;
			this.#learn(local, snapshot, sentAt);
		}
		return { state: snapshot.state, ...(snapshot.openUntil !== undefined ? { openUntil: snapshot.openUntil } : {}) };
	}
}

/** The object could not be reached: the call is allowed (a breaker must never become the outage). */
function failOpen(local: Local): BreakerDecision {
	return { allowed: true, state: "unknown", probe: false, source: "unavailable", unavailable: local.unavailableReason };
}

/** The isolate's breaker clients over one CIRCUIT_BREAKER namespace, one per closed-trust period. */
const breakerClients = perIsolate((CIRCUIT_BREAKER: Env["CIRCUIT_BREAKER"]) => {
	const env = { CIRCUIT_BREAKER };
	const byTrust = new Map<number, BreakerClient>();
	return (closedTrustMs: number): BreakerClient => {
		let client = byTrust.get(closedTrustMs);
		if (!client) {
			client = new BreakerClient({ stub: (name) => circuitBreakerFor(env, name), closedTrustMs });
			byTrust.set(closedTrustMs, client);
		}
		return client;
	};
});

/**
 * The isolate's breaker client over the CIRCUIT_BREAKER namespace: one per `closedTrustMs` (default 0,
 * always ask; see {@link BreakerClientOptions.closedTrustMs}), so callers that trust alike share memory.
 */
export function breakerClientFor(
	env: Pick<Env, "CIRCUIT_BREAKER">,
	options: { closedTrustMs?: number } = {},
): BreakerClient {
	return breakerClients(env.CIRCUIT_BREAKER)(options.closedTrustMs ?? 0);
}
