/**
 * Dead-letter management: a tenant's stored dead letters, read and replayed (every replay audited). It
 * stands above `events` (which stores what the dead-letter queue delivers) and `audit`, so neither of
 * them needs the other.
 */
import { type AppEnv, createRouter } from "../http";
import * as handlers from "./handlers";
import * as routes from "./routes";

export { MAX_REPLAY_BATCH, type ReplayActor, type ReplayResult, replayDeadLetters } from "./store";

/** The dead-letter admin API, mounted under the admin group (`/v1/admin/dead-letters`), whose guards it relies on. */
export function deadLetterRoutes() {
	return createRouter<AppEnv>()
		.openapi(routes.listDeadLetters, handlers.listDeadLetters)
		.openapi(routes.replayDeadLetters, handlers.replayDeadLetters)
		.openapi(routes.getDeadLetter, handlers.getDeadLetter)
		.openapi(routes.replayDeadLetter, handlers.replayDeadLetter);
}
