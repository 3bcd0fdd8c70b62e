/**
 * The LLM plane's routes, one group that app.ts mounts at /v1 behind the LLM guards (auth with scope
 * `llm`, plane `llm`, admission), attached to whatever paths the group registers: the OpenAI-compatible
 * routes, whose errors are rendered in OpenAI's shape (errors.ts), and the caller's usage report.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { tierPolicy } from "../config";
import { type AppEnv, BEARER, createRouter, jsonResponse, problems } from "../http";
import { chatCompletions } from "./chat";
import { llmConfig } from "./config";
import { embeddings } from "./embeddings";
import { modelList } from "./models";
import { ChatRequestSchema, EmbeddingsRequestSchema } from "./types";
import { usageRoutes } from "./usage-routes";

const errors = problems(400, 401, 403, 404, 413, 415, 429, 502, 503, 504);

const chat = createRoute({
	method: "post",
	path: "/chat/completions",
	summary: "Create a chat completion (OpenAI-compatible; `stream: true` answers server-sent events)",
	security: BEARER,
	request: {
		body: {
			required: true,
			content: { "application/json": { schema: ChatRequestSchema.openapi("ChatCompletionRequest") } },
		},
	},
	responses: {
		200: {
			description:
				"A chat.completion object, or a text/event-stream of chat.completion.chunk objects ending in `[DONE]`",
			content: { "application/json": { schema: z.looseObject({ object: z.literal("chat.completion") }) } },
		},
		...errors,
	},
});

const embed = createRoute({
	method: "post",
	path: "/embeddings",
	summary: "Create embeddings (OpenAI-compatible)",
	security: BEARER,
	request: {
		body: {
			required: true,
			content: { "application/json": { schema: EmbeddingsRequestSchema.openapi("EmbeddingsRequest") } },
		},
	},
	responses: { 200: jsonResponse(z.looseObject({ object: z.literal("list") }), "The embeddings"), ...errors },
});

const ModelSchema = z.object({
	id: z.string(),
	object: z.literal("model"),
	created: z.number().int(),
	owned_by: z.string(),
	/** Edgeway: what the model serves. */
	kind: z.enum(["chat", "embeddings"]),
});

const models = createRoute({
	method: "get",
	path: "/models",
	summary: "The models (aliases and provider/model targets) this caller's plan may use",
	security: BEARER,
	responses: {
		200: jsonResponse(z.object({ object: z.literal("list"), data: z.array(ModelSchema) }), "The models"),
		...problems(401, 403, 429),
	},
});

/** The OpenAI-compatible routes (chat completions, embeddings, models), to be mounted at {@link OPENAI_BASE}. */
function openAiRoutes() {
	const app = createRouter<AppEnv>();
	app.openapi(chat, (c) => chatCompletions(c, c.req.valid("json")) as never);
	app.openapi(embed, (c) => embeddings(c, c.req.valid("json")) as never);
	app.openapi(models, (c) => c.json(modelList(llmConfig(c.env), tierPolicy(c.var.principal.tier)), 200));
	return app;
}

/** Every route of the LLM plane, to be mounted at {@link OPENAI_BASE} behind the LLM guards. */
export function llmRoutes() {
	return createRouter<AppEnv>().route("/", openAiRoutes()).route("/usage", usageRoutes());
}

/** Where the LLM routes live: OpenAI's clients expect its API at `/v1`. */
export const OPENAI_BASE = "/v1";

let openAiPaths: ReadonlySet<string> | undefined;

/**
 * Whether errors on `path` are rendered in OpenAI's shape: the paths the OpenAI-compatible router
 * registers (all static), under {@link OPENAI_BASE}. Read from the router, so a route added to it is
 * rendered OpenAI's way without a list to keep.
 */
export function isOpenAiPath(path: string): boolean {
	openAiPaths ??= new Set(openAiRoutes().routes.map((r) => `${OPENAI_BASE}${r.path}`));
	return openAiPaths.has(path);
}
