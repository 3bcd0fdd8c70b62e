/**
 * The failure recorder over simulated time: a flood in one window becomes one record per tenant, each
 * counting every failure; windows close on their timer or when the next failure finds them over.
 */
import { describe, expect, it } from "vitest";
import { FailureRecorder } from "../../src/auth";

type Entry = { tenantId: string; action: string; metadata: Record<string, unknown> };

/**
 * A recorder on a clock the test moves, whose window timers fire only when the test says so. Each timer
 * keeps the promise `record` returned for the window it closes, so firing it can wait for that window's
 * write itself instead of for the event loop.
 */
function simulated(windowMs = 1000) {
	let t = 1_000_000;
	const timers: Array<{ due: number; fire: () => void; closed?: Promise<void> }> = [];
	const written: Entry[][] = [];
	const recorder = new FailureRecorder({
		windowMs,
		fallbackTenant: "operator",
		write: async (entries) => {
			written.push(entries as Entry[]);
		},
		now: () => t,
		sleep: (ms) => new Promise<void>((fire) => timers.push({ due: t + ms, fire })),
	});
	return {
		recorder,
		written,
		record(reason: string, tenantId?: string, subject?: string) {
			const before = timers.length;
			const scheduled = recorder.record(reason, tenantId, subject);
			// A failure that opens a window starts its timer; what `record` returned settles once that window is written.
			const timer = timers.length > before ? timers.at(-1) : undefined;
			if (timer && scheduled) timer.closed = scheduled;
			return scheduled;
		},
		advance(ms: number) {
			t += ms;
		},
		/** Fires the window timers that are due, and waits until what each started (the window's write) is done. */
		async fireTimers() {
			const due = timers.filter((x) => x.due <= t);
			for (const timer of due) {
				timers.splice(timers.indexOf(timer), 1);
				timer.fire();
			}
			await Promise.all(due.map((timer) => timer.closed));
		},
	};
}

const count = (entry: Entry | undefined) => entry?.metadata.count;

describe("FailureRecorder in simulated time", () => {
	it("writes nothing until the window closes, then one record per tenant counting every failure", async () => {
		const s = simulated();
		const opened = s.record("bad-signature", undefined, "acme");
		expect(opened).toBeDefined();
		for (let i = 1; i < 150; i++) {
			s.advance(5); // 150 failures over 745 ms of a 1000 ms window
			expect(s.record("bad-signature", undefined, "acme")).toBeUndefined();
		}
		s.record("bad-secret", "globex");
		expect(s.written).toEqual([]);
		s.advance(1000);
		await s.fireTimers();
		expect(s.written).toHaveLength(1);
		const [operator, globex] = s.written[0] ?? [];
		expect(operator).toMatchObject({
			tenantId: "operator",
			action: "auth.failed",
			metadata: { count: 150, reasons: { "bad-signature": 150 }, claimedTenants: { acme: 150 } },
		});
		expect(globex).toMatchObject({ tenantId: "globex", metadata: { count: 1, reasons: { "bad-secret": 1 } } });
		expect(globex?.metadata).not.toHaveProperty("claimedTenants");
	});

	it("starts a new window when a failure arrives after the window's end, writing the old one first", async () => {
		const s = simulated();
		s.record("expired", "acme");
		s.advance(999);
		expect(s.record("expired", "acme")).toBeUndefined();
		s.advance(1);
		// The window is over: this failure writes it and opens the next.
		expect(s.record("expired", "acme")).toBeDefined();
		expect(s.written.map((batch) => batch.map(count))).toEqual([[2]]);
		// The first window's timer fires late: it must not close the window that is open now.
		s.advance(10);
		await s.fireTimers();
		expect(s.written.map((batch) => batch.map(count))).toEqual([[2]]);
		// The second window's own timer closes it.
		s.advance(990);
		await s.fireTimers();
		expect(s.written.map((batch) => batch.map(count))).toEqual([[2], [1]]);
	});

	it("closes a window on its timer, and a flush writes the open window at once", async () => {
		const s = simulated();
		s.record("bad-signature");
		s.advance(1000);
		await s.fireTimers();
		expect(s.written.map((batch) => batch.map(count))).toEqual([[1]]);
		s.record("bad-signature");
		await s.recorder.flush();
		expect(s.written.map((batch) => batch.map(count))).toEqual([[1], [1]]);
		// Nothing open: a flush writes nothing.
		await s.recorder.flush();
		expect(s.written).toHaveLength(2);
	});

	it("bounds what one window holds: tenants beyond 100 go to the operator, subjects beyond 20 to (others)", async () => {
		const s = simulated();
		for (let i = 0; i < 120; i++) s.record("bad-secret", `tenant-${i}`);
		for (let i = 0; i < 30; i++) s.record("bad-signature", undefined, `claimed-${i}`);
		s.advance(1000);
		await s.fireTimers();
		const [batch] = s.written;
		expect(batch).toHaveLength(101);
		const operator = batch?.find((e) => e.tenantId === "operator");
		expect(operator?.metadata).toMatchObject({ count: 50, reasons: { "bad-secret": 20, "bad-signature": 30 } });
		const claimed = operator?.metadata.claimedTenants as Record<string, number>;
		expect(Object.keys(claimed)).toHaveLength(21);
		expect(claimed["(others)"]).toBe(10);
		expect(batch?.reduce((n, e) => n + Number(e.metadata.count), 0)).toBe(150);
	});
});
