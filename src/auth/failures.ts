/**
 * Failures (bad credentials, bad webhook signatures), counted in the isolate and written to the audit
 * log as one record per tenant per window, so a flood costs a bounded number of D1 writes.
 */
import { appendAudit } from "../audit";
import { config } from "../config";
import { log } from "../http";
import { errorMessage, perIsolate, sleep } from "../lib";
import type { AuthFailureReason } from "./principal";

/** Distinct tenants tracked per window; failures beyond are counted under the operator tenant. */
const MAX_TENANTS_PER_WINDOW = 100;
/** Distinct subjects (claimed tenant ids, endpoint ids) kept per record per window. */
const MAX_SUBJECTS_PER_WINDOW = 20;

interface Bucket {
	count: number;
	reasons: Partial<Record<string, number>>;
	/** What the failures were about (e.g. the tenant ids forged tokens claimed), and how often. */
	subjects: Record<string, number>;
}

export interface FailureRecorderOptions {
	windowMs: number;
	/** Tenant that unattributed failures are recorded under. */
	fallbackTenant: string;
	write: (entries: Parameters<typeof appendAudit>[1]) => Promise<void>;
	/** The audit action written (default `auth.failed`). */
	action?: string;
	/** The metadata key the subjects are listed under (default `claimedTenants`). */
	subjectsKey?: string;
	/** The clock (default `Date.now`); tests drive the windows with their own. */
	now?: () => number;
	/** Waits `ms` before a window closes (default a timer); tests close windows when they choose. */
	sleep?: (ms: number) => Promise<void>;
}

/** One per isolate. `record` counts; the window's records are written when it closes. */
export class FailureRecorder {
	#windowStart = 0;
	#buckets = new Map<string, Bucket>();
	#flushing: Promise<void> | null = null;
	readonly #options: FailureRecorderOptions;
	readonly #now: () => number;
	readonly #sleep: (ms: number) => Promise<void>;

	constructor(options: FailureRecorderOptions) {
		if (!(options.windowMs > 0)) throw new Error("FailureRecorder: windowMs must be positive");
		this.#options = options;
		this.#now = options.now ?? Date.now;
		this.#sleep = options.sleep ?? sleep;
	}

	/**
	 * Counts one failure. Returns a promise for `waitUntil` when this failure opened a new window: it
	 * waits for the window to close and writes it.
	 */
	record(
		reason: AuthFailureReason | (string & {}),
		tenantId: string | undefined,
		subject?: string,
		now = this.#now(),
	): Promise<void> | undefined {
		let scheduled: Promise<void> | undefined;
		if (this.#buckets.size > 0 && now >= this.#windowStart + this.#options.windowMs) {
			scheduled = this.flush();
		}
		if (this.#buckets.size === 0) {
			this.#windowStart = now;
			const windowEnd = now + this.#options.windowMs;
			const closing = this.#sleep(this.#options.windowMs).then(() =>
				this.#now() >= windowEnd - 1 && this.#windowStart === now ? this.flush() : undefined,
			);
			scheduled = scheduled ? Promise.all([scheduled, closing]).then(() => undefined) : closing;
		}
		// Only verified tenants get the record; anything else goes to the operator, so a forged token
		// cannot write into another tenant's audit log. Callers pass a subject for what they know only
		// unverified (auth: the claimed tenant) or for what the failure concerns (webhooks: the endpoint).
		let tenant = tenantId ?? this.#options.fallbackTenant;
		if (!this.#buckets.has(tenant) && this.#buckets.size >= MAX_TENANTS_PER_WINDOW) {
			tenant = this.#options.fallbackTenant;
		}
		const bucket = this.#buckets.get(tenant) ?? { count: 0, reasons: {}, subjects: {} };
		bucket.count++;
		bucket.reasons[reason] = (bucket.reasons[reason] ?? 0) + 1;
		if (subject) {
			const known = subject in bucket.subjects || Object.keys(bucket.subjects).length < MAX_SUBJECTS_PER_WINDOW;
			const key = known ? subject : "(others)";
			bucket.subjects[key] = (bucket.subjects[key] ?? 0) + 1;
		}
		this.#buckets.set(tenant, bucket);
		return scheduled;
	}

	/** Writes the open window now. */
	async flush(): Promise<void> {
		if (this.#buckets.size === 0) return this.#flushing ?? undefined;
		const windowStart = this.#windowStart;
		const buckets = this.#buckets;
		this.#buckets = new Map();
		const entries = [...buckets].map(([tenantId, b]) => ({
			tenantId,
			actor: "anonymous",
			action: this.#options.action ?? "auth.failed",
			metadata: {
				count: b.count,
				reasons: b.reasons,
				...(Object.keys(b.subjects).length > 0 ? { [this.#options.subjectsKey ?? "claimedTenants"]: b.subjects } : {}),
				windowStart,
				windowEnd: this.#now(),
			},
		}));
		this.#flushing = this.#options.write(entries).catch((err) => {
			log("error", "failure audit write failed", {
				action: this.#options.action ?? "auth.failed",
				error: errorMessage(err),
			});
		});
		await this.#flushing;
	}
}

/** Per environment, the isolate's recorders by action. */
const recorders = perIsolate((_env: Env) => new Map<string, FailureRecorder>());

/**
 * The isolate's recorder for `action` in this environment: windows of AUTH_FAILURE_WINDOW_S, written to
 * the audit log, unattributed failures under the operator tenant.
 */
export function failureRecorderFor(
	env: Env,
	options: { action: string; subjectsKey: string } = { action: "auth.failed", subjectsKey: "claimedTenants" },
): FailureRecorder {
	const byAction = recorders(env);
	let recorder = byAction.get(options.action);
	if (!recorder) {
		const cfg = config(env);
		recorder = new FailureRecorder({
			windowMs: cfg.AUTH_FAILURE_WINDOW_S * 1000,
			fallbackTenant: cfg.OPERATOR_TENANT,
			write: (entries) => appendAudit(env.DB, entries),
			...options,
		});
		byAction.set(options.action, recorder);
	}
	return recorder;
}
