/** The dead-letter admin API, mounted under the admin group (`/v1/admin/dead-letters`), whose guards it relies on. */
import { type AppEnv, createRouter } from "../http";
import * as handlers from "./dead-letter-handlers";
import * as routes from "./dead-letter-routes";

export function deadLetterRoutes() {
	return createRouter<AppEnv>()
		.openapi(routes.listDeadLetters, handlers.listDeadLetters)
		.openapi(routes.replayDeadLetters, handlers.replayDeadLetters)
		.openapi(routes.getDeadLetter, handlers.getDeadLetter)
		.openapi(routes.replayDeadLetter, handlers.replayDeadLetter);
}
