/** The drizzle client over the D1 binding. */
import { drizzle } from "drizzle-orm/d1";
import { perIsolate } from "../lib";
import * as schema from "./schema";

export type Database = ReturnType<typeof database>;

/** One drizzle client per D1 binding per isolate. */
export const database = perIsolate((d1: D1Database) => drizzle(d1, { schema }));
