/** Counts the rows a D1 binding's statements write (`meta.rows_written`), for benchmarks and tests only. */

/** A running total of rows written. */
export interface RowsCounter {
	/** Rows written since the counter was made or last reset. */
	readonly written: number;
	reset(): void;
}

/** A write statement (anything but a plain read), whose rows `raw()` and `first()` would not report. */
const READ_ONLY = /^\s*(select|with|explain|pragma)\b/i;

type Meta = { meta?: { rows_written?: number } };

class MeteredStatement {
	constructor(
		readonly inner: D1PreparedStatement,
		readonly sql: string,
		readonly count: (result: Meta) => void,
	) {}

	bind(...values: unknown[]): MeteredStatement {
		return new MeteredStatement(this.inner.bind(...values), this.sql, this.count);
	}

	async run<T>(): Promise<D1Result<T>> {
		const result = await this.inner.run<T>();
		this.count(result);
		return result;
	}

	async all<T>(): Promise<D1Result<T>> {
		const result = await this.inner.all<T>();
		this.count(result);
		return result;
	}

	// `raw()` and `first()` drop the result's meta: a write is run with `all()` instead and its rows
	// mapped as drizzle maps batch results (column order of each row object).
	async raw<T extends unknown[]>(options?: { columnNames?: boolean }): Promise<T[]> {
		if (READ_ONLY.test(this.sql)) return this.inner.raw<T>(options as { columnNames?: false });
		const { results } = await this.all<Record<string, unknown>>();
		const rows = results.map((row) => Object.values(row) as T);
		if (!options?.columnNames) return rows;
		return [Object.keys(results[0] ?? {}) as T, ...rows];
	}

	async first<T>(column?: string): Promise<T | null> {
		if (READ_ONLY.test(this.sql)) return column === undefined ? this.inner.first<T>() : this.inner.first<T>(column);
		const { results } = await this.all<Record<string, T>>();
		const row = results[0];
		if (!row) return null;
		return (column === undefined ? row : row[column]) as T;
	}
}

/**
 * Wraps a D1 binding so that every statement's `meta.rows_written` is added to a counter. Only for
 * benchmarks and tests (never in production): `raw()`/`first()` of a write run through `all()`.
 */
export function meterD1(d1: D1Database): { db: D1Database; counter: RowsCounter } {
	let written = 0;
	const count = (result: Meta) => {
		written += result.meta?.rows_written ?? 0;
	};
	const unwrap = (s: D1PreparedStatement) => (s instanceof MeteredStatement ? s.inner : s) as D1PreparedStatement;
	const db = {
		prepare: (query: string) => new MeteredStatement(d1.prepare(query), query, count),
		async batch<T>(statements: D1PreparedStatement[]): Promise<D1Result<T>[]> {
			const results = await d1.batch<T>(statements.map(unwrap));
			for (const r of results) count(r);
			return results;
		},
		exec: (query: string) => d1.exec(query),
		dump: () => (d1 as unknown as { dump(): Promise<ArrayBuffer> }).dump(),
		withSession: (constraint?: string) => d1.withSession(constraint as D1SessionConstraint),
	} as unknown as D1Database;
	return {
		db,
		counter: {
			get written() {
				return written;
			},
			reset() {
				written = 0;
			},
		},
	};
}
