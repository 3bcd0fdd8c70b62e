/**
 * Which breakers exist, for operators: the `breakers` table, kept from `breaker.transition` events
 * (every breaker that ever left `closed` is there). A transition's `seq` orders them, so a late or
 * replayed event never overwrites a newer state.
 */
import { sql } from "drizzle-orm";
import { z } from "zod";
import { breakers, database } from "../db";
import type { EventHandler } from "../events";
import { BREAKER_STATES } from "./interface";

const TransitionSchema = z.looseObject({
	name: z.string().min(1).max(512),
	target: z.string().nullable(),
	to: z.enum(BREAKER_STATES),
	reason: z.string(),
	seq: z.number().int(),
	at: z.iso.datetime(),
});

export const breakerRegistry: EventHandler = {
	name: "breaker-registry",
	idempotent: true,
	handles: (event) => event.type === "breaker.transition",
	async handle(event, env) {
		const t = TransitionSchema.parse(event.data);
		const row = {
			name: t.name,
			tenantId: event.tenantId,
			target: t.target ?? t.name,
			state: t.to,
			seq: t.seq,
			reason: t.reason,
			updatedAt: Date.parse(t.at),
		};
		await database(env.DB)
			.insert(breakers)
			.values(row)
			.onConflictDoUpdate({
				target: breakers.name,
				set: { state: row.state, seq: row.seq, reason: row.reason, updatedAt: row.updatedAt },
				setWhere: sql`excluded.seq > ${breakers.seq}`,
			});
	},
};
