/** The period quotas and budgets are counted in: the calendar month, UTC. */

/** The month `ms` falls in, as `YYYY-MM`. */
export function monthKey(ms: number): string {
	const d = new Date(ms);
	return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

/** When the month `ms` falls in ends (the first millisecond of the next). */
export function monthEnd(ms: number): number {
	const d = new Date(ms);
	return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}
