/** The admin API: `/v1/admin/*`, scope `admin`. */
import { deadLetterRoutes } from "../dead-letters";
import { type AppEnv, createRouter } from "../http";
import * as handlers from "./handlers";
import * as routes from "./routes";

export function adminRoutes() {
	return createRouter<AppEnv>()
		.openapi(routes.createTenant, handlers.createTenant)
		.openapi(routes.getTenant, handlers.getTenant)
		.openapi(routes.updateTenant, handlers.updateTenant)
		.openapi(routes.createKey, handlers.createKey)
		.openapi(routes.listKeys, handlers.listKeys)
		.openapi(routes.revokeKey, handlers.revokeKey)
		.route("/dead-letters", deadLetterRoutes());
}
