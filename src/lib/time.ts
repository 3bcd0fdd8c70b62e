/** Clocks, sleeps and timeouts. Timers belong to the caller's request, so another request's promise cannot wedge it. */

/** Milliseconds since the epoch; injected where tests need to move time. */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();

/** Resolves after `ms` (on a timer, so never sooner than the next turn), or at once when `signal` aborts; never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
	return new Promise<void>((resolve) => {
		if (signal?.aborted) return resolve();
		const done = () => {
			clearTimeout(timer);
			signal?.removeEventListener("abort", done);
			resolve();
		};
		const timer = setTimeout(done, Math.max(0, ms));
		signal?.addEventListener("abort", done, { once: true });
	});
}

export const TIMED_OUT = Symbol("timed out");

/** Waits for `promise`, or `ms` on a timer of the caller's own, whichever comes first. */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
	let timer: ReturnType<typeof setTimeout> | undefined;
	const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
		timer = setTimeout(() => resolve(TIMED_OUT), Math.max(0, ms));
	});
	try {
		return await Promise.race([promise, timeout]);
	} finally {
		clearTimeout(timer);
	}
}

/** `promise`, or a rejection with `error()` after `ms`. */
export async function orTimeout<T>(promise: Promise<T>, ms: number, error: () => unknown): Promise<T> {
	const answer = await within(promise, ms);
	if (answer === TIMED_OUT) throw error();
	return answer;
}

/**
 * `promise`, or a rejection as soon as `signal` aborts (with `error()`, by default the signal's reason):
 * a timeout holds even when the work ignores the signal.
 */
export function untilAborted<T>(
	promise: Promise<T>,
	signal: AbortSignal,
	error: () => unknown = () => signal.reason,
): Promise<T> {
	if (signal.aborted) return Promise.reject(error());
	return new Promise<T>((resolve, reject) => {
		const onAbort = () => reject(error());
		signal.addEventListener("abort", onAbort, { once: true });
		promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
	});
}
