/** Small async helpers shared by the planes. */
import type { Context } from "hono";

/** What keeps the isolate alive for a promise: `(p) => ctx.waitUntil(p)`, or `(p) => waitUntil(c, p)` in a Hono handler. */
export type WaitUntil = (promise: Promise<unknown>) => void;

/** Hands `promise` to the request's `waitUntil`; without an execution context (app.request in tests) it just runs. */
export function waitUntil(c: Context, promise: Promise<unknown> | undefined): void {
	if (!promise) return;
	try {
		c.executionCtx.waitUntil(promise);
	} catch {
		// No execution context: let it run.
	}
}

export const TIMED_OUT = Symbol("timed out");

/**
 * Waits for `promise`, or `ms` on a timer of the caller's own, whichever comes first. The timer belongs
 * to the caller's request, so a promise made by another (possibly cancelled) request cannot wedge it.
 */
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
