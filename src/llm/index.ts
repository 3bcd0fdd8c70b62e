// The budget ledger and its RPC contract, for the tenant's RateLimiter object that keeps it.
export {
	BudgetLedger,
	type BudgetState,
	type BudgetStore,
	type RenewBudgetRequest,
	RenewBudgetRequestSchema,
	type RenewBudgetResult,
} from "./budget";
export { providerKeyRoutes } from "./byok";
export { type LlmConfig, llmConfig } from "./config";
export { openAiErrorResponse } from "./errors";
export { isOpenAiPath, llmRoutes, OPENAI_BASE } from "./routes";
export { usageRecorder } from "./usage";
