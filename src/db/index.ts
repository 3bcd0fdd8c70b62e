export { type Database, database } from "./client";
export { newId } from "./ids";
export { SqlMeter } from "./rows-meter";
export {
	type ApiKey,
	type AuditRecord,
	apiKeys,
	auditLog,
	type BreakerRow,
	breakers,
	type DeadLetter,
	deadLetters,
	eventFailures,
	type LlmUsage,
	llmUsage,
	type ProviderKey,
	processedEvents,
	providerKeys,
	type Tenant,
	tenants,
	type WebhookDelivery,
	type WebhookEndpoint,
	webhookDeliveries,
	webhookEndpoints,
} from "./schema";
