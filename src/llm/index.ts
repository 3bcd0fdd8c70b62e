export { providerKeyRoutes } from "./byok";
export { type LlmConfig, llmConfig } from "./config";
export { openAiErrorResponse } from "./errors";
export { isOpenAiPath, llmRoutes, OPENAI_BASE } from "./routes";
export { usageRecorder } from "./usage";
