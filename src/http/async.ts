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
