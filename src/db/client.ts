/** The drizzle client over the D1 binding. */
import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema";

export type Database = ReturnType<typeof database>;

const clients = new WeakMap<D1Database, ReturnType<typeof drizzle<typeof schema>>>();

/** One drizzle client per D1 binding per isolate. */
export function database(d1: D1Database) {
	let db = clients.get(d1);
	if (!db) {
		db = drizzle(d1, { schema });
		clients.set(d1, db);
	}
	return db;
}
