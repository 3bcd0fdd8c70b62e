export { type Database, database } from "./client";
export { type ApiKey, type AuditRecord, apiKeys, auditLog, type Tenant, tenants } from "./schema";
