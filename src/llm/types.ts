/**
 * The OpenAI wire format, which is also the plane's internal format: every provider takes an OpenAI
 * chat request and answers an OpenAI completion (or a stream of OpenAI chunks), translating to and
 * from its own API inside its module. Requests are validated with zod at the edge; responses are
 * typed, not validated (they come from providers we chose, and are translated field by field).
 */
import { z } from "zod";

const TextPart = z.object({ type: z.literal("text"), text: z.string() });
const ImagePart = z.object({
	type: z.literal("image_url"),
	image_url: z.object({ url: z.string().min(1), detail: z.enum(["auto", "low", "high"]).optional() }),
});
const ContentPart = z.discriminatedUnion("type", [TextPart, ImagePart]);

const ToolCallSchema = z.object({
	id: z.string().min(1).max(256),
	type: z.literal("function"),
	function: z.object({ name: z.string().min(1).max(128), arguments: z.string() }),
});

const name = z.string().min(1).max(128).optional();

export const ChatMessageSchema = z.discriminatedUnion("role", [
	z.object({ role: z.literal("system"), content: z.union([z.string(), z.array(TextPart)]), name }),
	z.object({ role: z.literal("developer"), content: z.union([z.string(), z.array(TextPart)]), name }),
	z.object({ role: z.literal("user"), content: z.union([z.string(), z.array(ContentPart).min(1)]), name }),
	z.object({
		role: z.literal("assistant"),
		content: z
			.union([z.string(), z.array(TextPart)])
			.nullable()
			.optional(),
		tool_calls: z.array(ToolCallSchema).optional(),
		name,
	}),
	z.object({
		role: z.literal("tool"),
		content: z.union([z.string(), z.array(TextPart)]),
		tool_call_id: z.string().min(1).max(256),
	}),
]);
export type ChatMessage = z.infer<typeof ChatMessageSchema>;
export type ToolCall = z.infer<typeof ToolCallSchema>;

export const ToolSchema = z.object({
	type: z.literal("function"),
	function: z.object({
		name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "tool names are 1–64 letters, digits, _ or -"),
		description: z.string().max(4096).optional(),
		parameters: z.record(z.string(), z.unknown()).optional(),
		strict: z.boolean().nullable().optional(),
	}),
});
export type Tool = z.infer<typeof ToolSchema>;

export const ToolChoiceSchema = z.union([
	z.enum(["none", "auto", "required"]),
	z.object({ type: z.literal("function"), function: z.object({ name: z.string().min(1) }) }),
]);
export type ToolChoice = z.infer<typeof ToolChoiceSchema>;

export const ResponseFormatSchema = z.discriminatedUnion("type", [
	z.object({ type: z.literal("text") }),
	z.object({ type: z.literal("json_object") }),
	z.object({
		type: z.literal("json_schema"),
		json_schema: z.object({
			name: z.string().min(1).max(64),
			description: z.string().optional(),
			schema: z.record(z.string(), z.unknown()).optional(),
			strict: z.boolean().nullable().optional(),
		}),
	}),
]);
export type ResponseFormat = z.infer<typeof ResponseFormatSchema>;

/**
 * A chat request. Fields this schema does not know (newer OpenAI options such as `reasoning_effort`,
 * `metadata`, `logit_bias`) are kept and passed to OpenAI and OpenAI-compatible providers as they came;
 * the other providers translate only what they understand.
 */
export const ChatRequestSchema = z.looseObject({
	/** An alias (`fast`), or `provider/model` where the tier allows naming targets directly. */
	model: z.string().min(1).max(256),
	messages: z.array(ChatMessageSchema).min(1).max(4096),
	stream: z.boolean().nullable().optional(),
	stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
	tools: z.array(ToolSchema).max(128).optional(),
	tool_choice: ToolChoiceSchema.optional(),
	parallel_tool_calls: z.boolean().optional(),
	response_format: ResponseFormatSchema.optional(),
	max_tokens: z.number().int().min(1).max(1_000_000).nullable().optional(),
	max_completion_tokens: z.number().int().min(1).max(1_000_000).nullable().optional(),
	temperature: z.number().min(0).max(2).nullable().optional(),
	top_p: z.number().min(0).max(1).nullable().optional(),
	n: z.literal(1).nullable().optional(),
	stop: z
		.union([z.string(), z.array(z.string()).max(4)])
		.nullable()
		.optional(),
	presence_penalty: z.number().min(-2).max(2).nullable().optional(),
	frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
	seed: z.number().int().nullable().optional(),
	user: z.string().max(256).optional(),
});
export type ChatRequest = z.infer<typeof ChatRequestSchema>;

export const EmbeddingsRequestSchema = z.object({
	model: z.string().min(1).max(256),
	input: z.union([
		z.string(),
		z.array(z.string()).min(1).max(2048),
		z.array(z.number().int()).min(1),
		z.array(z.array(z.number().int()).min(1)).min(1).max(2048),
	]),
	encoding_format: z.enum(["float", "base64"]).optional(),
	dimensions: z.number().int().min(1).max(16_384).optional(),
	user: z.string().max(256).optional(),
});
export type EmbeddingsRequest = z.infer<typeof EmbeddingsRequestSchema>;

export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter";

export interface Usage {
	prompt_tokens: number;
	completion_tokens: number;
	total_tokens: number;
}

export interface ChatCompletion {
	id: string;
	object: "chat.completion";
	created: number;
	model: string;
	choices: Array<{
		index: number;
		message: { role: "assistant"; content: string | null; tool_calls?: ToolCall[]; refusal?: null };
		finish_reason: FinishReason | null;
		logprobs?: null;
	}>;
	usage?: Usage;
	system_fingerprint?: string | null;
}

/** One streamed delta; `tool_calls` entries are keyed by `index` and carry id/name only in their first chunk. */
export interface ChatCompletionChunk {
	id: string;
	object: "chat.completion.chunk";
	created: number;
	model: string;
	choices: Array<{
		index: number;
		delta: {
			role?: "assistant";
			content?: string | null;
			tool_calls?: Array<{
				index: number;
				id?: string;
				type?: "function";
				function?: { name?: string; arguments?: string };
			}>;
		};
		finish_reason: FinishReason | null;
		logprobs?: null;
	}>;
	/** Only on the last chunk, and only when usage was asked for (`stream_options.include_usage`). */
	usage?: Usage | null;
}

export interface EmbeddingsResponse {
	object: "list";
	data: Array<{ object: "embedding"; index: number; embedding: number[] | string }>;
	model: string;
	usage: { prompt_tokens: number; total_tokens: number };
}
