/**
 * Authentication failures, counted in the isolate and written to the audit log as one record per
 * tenant per window, so a flood of bad credentials costs a bounded number of D1 writes.
 */
import type { appendAudit } from "../audit";
import { log } from "../http";
import type { AuthFailureReason } from "./principal";

/** Distinct tenants tracked per window; failures beyond are counted under the operator tenant. */
const MAX_TENANTS_PER_WINDOW = 100;
/** Distinct claimed (unverified) tenant ids kept in the operator's record per window. */
const MAX_CLAIMED_PER_WINDOW = 20;

interface Bucket {
	count: number;
	reasons: Partial<Record<AuthFailureReason, number>>;
	/** Unverifiable failures only: the tenant ids the tokens claimed, and how often. */
	claimed: Record<string, number>;
}

export interface FailureRecorderOptions {
	windowMs: number;
	/** Tenant that unattributed failures are recorded under. */
	fallbackTenant: string;
	write: (entries: Parameters<typeof appendAudit>[1]) => Promise<void>;
}

/** One per isolate. `record` counts; the window's records are written when it closes. */
export class FailureRecorder {
	#windowStart = 0;
	#buckets = new Map<string, Bucket>();
	#flushing: Promise<void> | null = null;
	readonly #options: FailureRecorderOptions;

	constructor(options: FailureRecorderOptions) {
		if (!(options.windowMs > 0)) throw new Error("FailureRecorder: windowMs must be positive");
		this.#options = options;
	}

	/**
	 * Counts one failure. Returns a promise for `waitUntil` when this failure opened a new window: it
	 * waits for the window to close and writes it.
	 */
	record(
		reason: AuthFailureReason,
		tenantId: string | undefined,
		claimedTenant?: string,
		now = Date.now(),
	): Promise<void> | undefined {
		let scheduled: Promise<void> | undefined;
		if (this.#buckets.size > 0 && now >= this.#windowStart + this.#options.windowMs) {
			scheduled = this.flush();
		}
		if (this.#buckets.size === 0) {
			this.#windowStart = now;
			const windowEnd = now + this.#options.windowMs;
			const closing = new Promise<void>((resolve) => setTimeout(resolve, this.#options.windowMs)).then(() =>
				Date.now() >= windowEnd - 1 && this.#windowStart === now ? this.flush() : undefined,
			);
			scheduled = scheduled ? Promise.all([scheduled, closing]).then(() => undefined) : closing;
		}
		// Only verified tenants get the record; anything else goes to the operator, so a forged token
		// cannot write into another tenant's audit log.
		let tenant = tenantId ?? this.#options.fallbackTenant;
		if (!this.#buckets.has(tenant) && this.#buckets.size >= MAX_TENANTS_PER_WINDOW) {
			tenant = this.#options.fallbackTenant;
		}
		const bucket = this.#buckets.get(tenant) ?? { count: 0, reasons: {}, claimed: {} };
		bucket.count++;
		bucket.reasons[reason] = (bucket.reasons[reason] ?? 0) + 1;
		if (!tenantId && claimedTenant) {
			const known = claimedTenant in bucket.claimed || Object.keys(bucket.claimed).length < MAX_CLAIMED_PER_WINDOW;
			const key = known ? claimedTenant : "(others)";
			bucket.claimed[key] = (bucket.claimed[key] ?? 0) + 1;
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
			action: "auth.failed",
			metadata: {
				count: b.count,
				reasons: b.reasons,
				...(Object.keys(b.claimed).length > 0 ? { claimedTenants: b.claimed } : {}),
				windowStart,
				windowEnd: Date.now(),
			},
		}));
		this.#flushing = this.#options.write(entries).catch((err) => {
			log("error", "auth failure audit write failed", { error: err instanceof Error ? err.message : String(err) });
		});
		await this.#flushing;
	}
}
