/** The webhooks plane: endpoints API (`/v1/webhooks`, scope webhooks:manage), the public ingest door, processing. */

import { type AppEnv, createRouter } from "../http";
import * as handlers from "./handlers";
import * as routes from "./routes";

export { ENDPOINT_CACHE_MS, endpointCacheForget } from "./endpoints";
export {
	deliveryEventId,
	ENQUEUE_BACKOFF_BASE_MS,
	enqueueBackoffMs,
	MAX_ENQUEUE_FAILURES,
	recordEnqueueFailures,
	SWEEP_AFTER_MS,
} from "./enqueue";
export {
	ENQUEUE_RETRY_AFTER_S,
	INLINE_PAYLOAD_MAX_BYTES,
	ingestRoutes,
	MAX_CONTENT_TYPE_CHARS,
	MAX_DELIVERY_ID_CHARS,
	MAX_EVENT_TYPE_CHARS,
	REQUEUE_AFTER_MS,
} from "./ingest";
export {
	deliveryStatusUpdater,
	forwarder,
	forwardRetryDelay,
	STANDARD_WEBHOOKS_SCHEDULE_S,
	SWEEP_BATCH,
	type SweepResult,
	sweepWebhookDeliveries,
} from "./processing";

export function webhookRoutes() {
	return createRouter<AppEnv>()
		.openapi(routes.createEndpoint, handlers.createEndpoint)
		.openapi(routes.listEndpoints, handlers.listEndpoints)
		.openapi(routes.getEndpoint, handlers.getEndpoint)
		.openapi(routes.updateEndpoint, handlers.updateEndpoint)
		.openapi(routes.listDeliveries, handlers.listDeliveries)
		.openapi(routes.getDelivery, handlers.getDelivery)
		.openapi(routes.replayDelivery, handlers.replayDelivery);
}
