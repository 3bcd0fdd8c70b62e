export { type Database, database } from "./client";
export { newId } from "./ids";
export {
	type ApiKey,
	type AuditRecord,
	apiKeys,
	auditLog,
	type DeadLetter,
	deadLetters,
	eventFailures,
	processedEvents,
	type Tenant,
	tenants,
	type WebhookDelivery,
	type WebhookEndpoint,
	webhookDeliveries,
	webhookEndpoints,
} from "./schema";
