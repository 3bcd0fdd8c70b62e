/** Counts the rows a Durable Object's SQLite statements write (its cursors' `rowsWritten`). */

/**
 * A Durable Object's SQLite storage that keeps the total of its cursors' `rowsWritten`. Exact when
 * each cursor is read to its end before the next statement (as the objects here do); cheap enough to
 * stay on in production: one addition per statement.
 */
export class SqlMeter {
	#folded = 0;
	#last: SqlStorageCursor<Record<string, SqlStorageValue>> | undefined;
	constructor(readonly sql: SqlStorage) {}

	/** Runs a statement, as {@link SqlStorage.exec}. */
	exec = <T extends Record<string, SqlStorageValue>>(query: string, ...bindings: unknown[]): SqlStorageCursor<T> => {
		this.#folded += this.#last?.rowsWritten ?? 0;
		const cursor = this.sql.exec<T>(query, ...bindings);
		this.#last = cursor;
		return cursor;
	};

	/** Rows written by statements run through this meter since the object started. */
	get rowsWritten(): number {
		return this.#folded + (this.#last?.rowsWritten ?? 0);
	}
}
