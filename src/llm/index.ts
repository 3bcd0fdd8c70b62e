export { providerKeyRoutes } from "./byok";
export { type LlmConfig, llmConfig } from "./config";
export { isOpenAiPath, openAiErrorResponse } from "./errors";
export { llmRoutes } from "./routes";
export { usageRecorder } from "./usage";
export { usageRoutes } from "./usage-routes";
