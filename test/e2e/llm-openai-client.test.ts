/**
 * The official `openai` npm client, pointed at the gateway under Miniflare, works unchanged: chat,
 * streaming, tools (OpenAI and Anthropic upstreams), response_format, embeddings, models, and its
 * typed errors (401, 403, 404, 400, 429) from errors rendered in OpenAI's shape.
 */
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LlmSetup, startLlmGateway } from "../helpers/node/llm.ts";
import { JSON_TEXT, OK_TEXT } from "../helpers/node/llm-stub.ts";

let setup: LlmSetup;
let acme: OpenAI;
let globex: OpenAI;

function client(apiKey: string): OpenAI {
	return new OpenAI({ apiKey, baseURL: new URL("/v1", setup.gw.url).toString(), maxRetries: 0, timeout: 20_000 });
}

const weatherTool = {
	type: "function" as const,
	function: {
		name: "get_weather",
		description: "Weather for a city",
		parameters: {
			type: "object",
			properties: { city: { type: "string" }, unit: { type: "string" } },
			required: ["city"],
		},
	},
};

beforeAll(async () => {
	setup = await startLlmGateway();
	acme = client(await setup.token("acme"));
	globex = client(await setup.token("globex"));
});

afterAll(async () => {
	await setup?.dispose();
});

describe("the openai client against the gateway", () => {
	it("chats, and the headers say who served", async () => {
		const { data, response } = await globex.chat.completions
			.create({ model: "fast", messages: [{ role: "user", content: "Say hello" }] })
			.withResponse();
		expect(data.object).toBe("chat.completion");
		expect(data.choices[0]?.message.content).toBe(OK_TEXT);
		expect(data.choices[0]?.finish_reason).toBe("stop");
		expect(data.usage?.completion_tokens).toBeGreaterThan(0);
		// Workers AI is absent locally, so the priority-1 target served, on the first attempt.
		expect(response.headers.get("x-edgeway-provider")).toBe("openai");
		expect(response.headers.get("x-edgeway-model")).toBe("ok");
		expect(response.headers.get("x-edgeway-attempts")).toBe("1");
		expect(response.headers.get("x-request-id")).toMatch(/\S/);
	});

	it("streams, with the usage chunk only when asked for", async () => {
		const stream = await globex.chat.completions.create({
			model: "smart",
			messages: [{ role: "user", content: "Say hello" }],
			stream: true,
			stream_options: { include_usage: true },
		});
		let text = "";
		let usage: OpenAI.CompletionUsage | null | undefined;
		let finish: string | null | undefined;
		for await (const chunk of stream) {
			text += chunk.choices[0]?.delta.content ?? "";
			finish = chunk.choices[0]?.finish_reason ?? finish;
			if (chunk.usage) usage = chunk.usage;
		}
		expect(text).toBe(OK_TEXT);
		expect(finish).toBe("stop");
		expect(usage?.prompt_tokens).toBeGreaterThan(0);

		const quiet = await globex.chat.completions.create({
			model: "smart",
			messages: [{ role: "user", content: "Say hello" }],
			stream: true,
		});
		let sawUsage = false;
		for await (const chunk of quiet) if (chunk.usage) sawUsage = true;
		expect(sawUsage).toBe(false);
	});

	for (const provider of ["openai", "anthropic"]) {
		it(`calls tools through ${provider}, streamed and not`, async () => {
			const request = {
				model: `${provider}/tools`,
				messages: [{ role: "user" as const, content: "Weather in Paris and Tokyo?" }],
				tools: [weatherTool],
				tool_choice: "auto" as const,
			};
			const answer = await acme.chat.completions.create(request);
			const calls = answer.choices[0]?.message.tool_calls ?? [];
			expect(answer.choices[0]?.finish_reason).toBe("tool_calls");
			expect(calls).toHaveLength(2);
			expect(calls.map((c) => (c.type === "function" ? JSON.parse(c.function.arguments).city : null))).toEqual([
				"Paris",
				"Tokyo",
			]);

			const stream = acme.chat.completions.stream({ ...request, stream: true });
			const final = await stream.finalChatCompletion();
			const streamed = final.choices[0]?.message.tool_calls ?? [];
			expect(streamed).toHaveLength(2);
			expect(streamed.map((c) => (c.type === "function" ? JSON.parse(c.function.arguments) : null))).toEqual([
				{ city: "Paris", unit: "celsius" },
				{ city: "Tokyo", unit: "celsius" },
			]);
			expect(new Set(streamed.map((c) => c.id)).size).toBe(2);

			// The tool results go back in the next turn, and the translation carries them.
			const followUp = await acme.chat.completions.create({
				model: `${provider}/ok`,
				messages: [
					...request.messages,
					{ role: "assistant", content: null, tool_calls: calls },
					...calls.map((c) => ({ role: "tool" as const, tool_call_id: c.id, content: '{"temp":21}' })),
				],
				tools: [weatherTool],
			});
			expect(followUp.choices[0]?.message.content).toBe(OK_TEXT);
		});
	}

	it("passes response_format through", async () => {
		const answer = await acme.chat.completions.create({
			model: "openai/json",
			messages: [{ role: "user", content: "JSON please" }],
			response_format: { type: "json_object" },
		});
		expect(JSON.parse(answer.choices[0]?.message.content ?? "")).toEqual(JSON.parse(JSON_TEXT));
		const sent = setup.stub.requests.at(-1)?.body as { response_format?: unknown };
		expect(sent.response_format).toEqual({ type: "json_object" });
	});

	it("embeds", async () => {
		const answer = await globex.embeddings.create({ model: "embed", input: ["first", "second"] });
		expect(answer.data).toHaveLength(2);
		expect(answer.data[0]?.embedding.length).toBeGreaterThan(0);
		expect(answer.usage.prompt_tokens).toBeGreaterThan(0);
	});

	it("lists the models the caller's plan allows", async () => {
		const pro = (await globex.models.list()).data.map((m) => m.id);
		expect(pro).toEqual(expect.arrayContaining(["fast", "smart", "embed", "openai/ok"]));
		expect(pro).not.toContain("fallback");
		const enterprise = (await acme.models.list()).data.map((m) => m.id);
		expect(enterprise).toContain("fallback");
	});

	it("raises the client's typed errors", async () => {
		const anonymous = client("ew_not_a_real_key_0000000000000000");
		await expect(anonymous.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);

		const free = client(await setup.token("freeco"));
		await expect(
			free.chat.completions.create({ model: "fast", messages: [{ role: "user", content: "hi" }] }),
		).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError);
		// The tier decides: pro may not name a target outside its aliases.
		await expect(
			globex.chat.completions.create({ model: "failing/error", messages: [{ role: "user", content: "hi" }] }),
		).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError);
		const unknown = await acme.chat.completions
			.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] })
			.catch((e: unknown) => e);
		expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
		expect((unknown as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("model_not_found");

		const malformed = await acme.chat.completions
			.create({ model: "fast", messages: [{ role: "wizard", content: "hi" }] as never })
			.catch((e: unknown) => e);
		expect(malformed).toBeInstanceOf(OpenAI.BadRequestError);
		expect((malformed as InstanceType<typeof OpenAI.BadRequestError>).code).toBe("validation_failed");
		const empty = await acme.chat.completions.create({ model: "fast", messages: [] }).catch((e: unknown) => e);
		expect(empty).toBeInstanceOf(OpenAI.BadRequestError);
	});

	it("raises RateLimitError when the tenant's rate limit refuses", async () => {
		await setup.gw.seedTenant({ id: "tiny", tier: "pro", limits: { rate: { perSecond: 0.01, burst: 2 } } });
		const tiny = client(await setup.token("tiny"));
		const results = await Promise.allSettled(
			Array.from({ length: 4 }, () =>
				tiny.chat.completions.create({ model: "fast", messages: [{ role: "user", content: "hi" }] }),
			),
		);
		expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(2);
		const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason);
		expect(refused).toHaveLength(2);
		for (const err of refused) {
			expect(err).toBeInstanceOf(OpenAI.RateLimitError);
			expect((err as InstanceType<typeof OpenAI.RateLimitError>).headers?.get("retry-after")).toMatch(/^\d+$/);
		}
	});
});
