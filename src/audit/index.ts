/** The append-only, hash-chained audit log: writers, the events handler, and `/v1/audit` (scope `admin`). */
import { type AppEnv, createRouter } from "../http";
import * as handlers from "./handlers";
import * as routes from "./routes";

export {
	type ChainBreak,
	type ChainReport,
	ChainVerifier,
	chainHash,
	type StoredRecord,
} from "./chain";
export { auditWriter } from "./event-writer";
export {
	type AuditListItem,
	type AuditListOptions,
	type AuditPage,
	type AuditVerification,
	listAudit,
	verifyAudit,
} from "./read";
export { type AuditEntry, appendAudit, appendAuditOnce, commitWithAudit } from "./store";

/** The audit API, mounted at `/v1/audit` behind the admin guards (src/app.ts). */
export function auditRoutes() {
	return createRouter<AppEnv>()
		.openapi(routes.listAudit, handlers.listAudit)
		.openapi(routes.verifyAudit, handlers.verifyAudit);
}
