/** The back-off of retried queue messages. */

/** Exponential back-off of a retried message: `min(base · 2^(attempts−1), max)` seconds, less up to `jitter` of it. */
export interface RetryPolicy {
	baseSeconds: number;
	maxSeconds: number;
	/** 0 = exact delays; 0.5 = each delay drawn from [½d, d]. */
	jitter: number;
}

/** 2, 4, 8, 16, 32 s … up to 5 minutes, jittered. With `max_retries = 5` an event is dead-lettered about a minute after it first failed. */
export const EVENT_RETRY: RetryPolicy = { baseSeconds: 2, maxSeconds: 300, jitter: 0.5 };

/** Queues refuse a delay over 24 hours. */
const MAX_QUEUE_DELAY_SECONDS = 86_400;

/** The delay before redelivery `attempts` (1 for the first delivery). */
export function retryDelaySeconds(attempts: number, policy: RetryPolicy = EVENT_RETRY, random = Math.random): number {
	const exponent = Math.min(Math.max(attempts, 1) - 1, 30);
	const full = Math.min(policy.baseSeconds * 2 ** exponent, policy.maxSeconds, MAX_QUEUE_DELAY_SECONDS);
	if (full <= 0) return 0;
	const jittered = full * (1 - policy.jitter * random());
	return Math.max(1, Math.round(jittered));
}
