/** Guardrails: each detector, block and redact, request / embeddings / completion scans, and the stream guard. */
import { describe, expect, it } from "vitest";
import {
	type CompiledGuardrails,
	checkChatInput,
	checkChatOutput,
	checkEmbeddingsInput,
	compileGuardrails,
	type Finding,
	type GuardrailCheck,
	type Guardrails,
	patternProblem,
	STREAM_CONTEXT_CHARS,
	StreamGuard,
	scanText,
} from "../../src/llm/guardrails";
import type { ChatCompletion, ChatRequest } from "../../src/llm/types";
import { mulberry32 } from "../helpers/random";

// Fake credentials are assembled at run time so that no scanner mistakes this file for a leak.
const join = (...parts: string[]): string => parts.join("");
const ALNUM = "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0zA";
const SECRETS = {
	openaiProject: join("sk-", "proj-", ALNUM, "_-", ALNUM),
	openaiLegacy: join("sk-", ALNUM, "QrStUvWxYz012345"),
	anthropic: join("sk-", "ant-", "api03-", ALNUM, ALNUM, "-AAAA"),
	aws: join("AKIA", "IOSFODNN7EXAMPL", "E"),
	awsSession: join("ASIA", "Y3FJQ2XZ5BKPL7M0"),
	github: join("ghp", "_", ALNUM, "1234"),
	githubPat: join("github", "_pat_", "11ABCDEFG0", ALNUM, "_", ALNUM),
	slack: join("xox", "b-", "123456789012-1234567890123-", "abcdefghijklmnopqrstuvwx"),
	stripe: join("sk", "_live_", ALNUM.slice(0, 24)),
	stripeRestricted: join("rk", "_live_", ALNUM.slice(0, 24)),
	stripeTest: join("sk", "_test_", ALNUM.slice(0, 24)),
	google: join("AI", "za", "SyD", ALNUM),
	edgeway: join("ew", "_abcdefgh1234_", "0123456789abcdef".repeat(4)),
	jwt: join(
		"eyJ",
		"hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
		".eyJ",
		"zdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ",
		".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
	),
};
const PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n";
const PEM = join("-----BEGIN ", "PRIVATE KEY-----\n", PEM_BODY, "-----END PRIVATE KEY-----");

function checks(...list: GuardrailCheck[]): CompiledGuardrails {
	return compileGuardrails(list);
}
const redactAll = (...kinds: Array<Exclude<GuardrailCheck["kind"], "pattern">>): CompiledGuardrails =>
	checks(...kinds.map((kind) => ({ kind, action: "redact" as const })));

function guardrails(input: GuardrailCheck[], maxPromptChars = 200_000): Guardrails {
	return { maxPromptChars, input, output: [] };
}

/** Streams `text` through a guard in the given chunk sizes; collects output, findings and the held size. */
function stream(g: CompiledGuardrails, text: string, sizes: (i: number) => number, lookBehind?: number) {
	const guard = new StreamGuard(g, lookBehind === undefined ? {} : { lookBehind });
	let emitted = "";
	let blocked = null as Finding | null;
	let blockedBeforeEnd = false;
	let maxHeld = 0;
	const counts = new Map<string, number>();
	const take = (step: { emit: string; blocked: Finding | null; findings: Finding[] }) => {
		emitted += step.emit;
		blocked ??= step.blocked;
		for (const f of step.findings) counts.set(f.check, (counts.get(f.check) ?? 0) + f.count);
	};
	for (let pos = 0, i = 0; pos < text.length; i++) {
		const size = Math.max(1, sizes(i));
		take(guard.push(text.slice(pos, pos + size)));
		maxHeld = Math.max(maxHeld, guard.held);
		pos += size;
		if (blocked) {
			blockedBeforeEnd = true;
			break;
		}
	}
	take(guard.end());
	return { emitted, blocked, blockedBeforeEnd, maxHeld, counts };
}

function countsOf(findings: Finding[]): Map<string, number> {
	return new Map(findings.map((f) => [f.check, f.count]));
}

describe("secrets detector", () => {
	const g = redactAll("secrets");

	it.each(Object.entries(SECRETS))("redacts a %s key whole", (_name, secret) => {
		const r = scanText(g, `key: ${secret}, thanks`);
		expect(r.text).toBe("key: [REDACTED:secrets], thanks");
		expect(r.findings).toEqual([{ check: "secrets", action: "redact", count: 1 }]);
		expect(r.blocked).toBeNull();
	});

	it("redacts a PEM private key's header and body and leaves the END line", () => {
		const r = scanText(g, `here:\n${PEM}\nbye`);
		expect(r.text).toBe("here:\n[REDACTED:secrets]-----END PRIVATE KEY-----\nbye");
		expect(r.text).not.toContain("MIIE");
	});

	it("redacts a long JWT and a long key whole, however long their tails", () => {
		const longJwt = `${SECRETS.jwt}${"x".repeat(2000)}`;
		const longKey = `${SECRETS.openaiProject}${"Z".repeat(2000)}`;
		expect(scanText(g, `a ${longJwt} b ${longKey} c`).text).toBe("a [REDACTED:secrets] b [REDACTED:secrets] c");
	});

	it("leaves look-alikes alone", () => {
		const text = [
			"scikit sk-learn-based-classifier-model-v2",
			"task-abcdefghijklmnopqrstuvwxyz0123456789",
			`${SECRETS.aws}X`, // 21 characters: not an access key id
			"ghp_short",
			"eyJhbGciOiJIUzI1NiJ9 alone",
			"-----BEGIN PUBLIC KEY-----",
			"ew_short_key",
		].join("\n");
		expect(scanText(g, text)).toEqual({ text, findings: [], blocked: null });
	});
});

describe("card-number detector", () => {
	const g = redactAll("card-numbers");

	it.each([
		"4111 1111 1111 1111",
		"4111-1111-1111-1111",
		"4111111111111111",
		"3782 822463 10005",
		"5555555555554444",
		"6011 0009 9013 9424",
	])("redacts the Luhn-valid %s", (card) => {
		expect(scanText(g, `card ${card}.`).text).toBe("card [REDACTED:card-numbers].");
	});

	it("cuts a trailing group that is not part of the card", () => {
		expect(scanText(g, "pay 4111 1111 1111 1111 2024 now").text).toBe("pay [REDACTED:card-numbers] 2024 now");
	});

	it("finds a card after a leading group that is not part of it", () => {
		expect(scanText(g, "ref 12 4111 1111 1111 1111").text).toBe("ref 12 [REDACTED:card-numbers]");
	});

	it.each([
		["Luhn-invalid", "4111 1111 1111 1112"],
		["one repeated digit", "0000 0000 0000 0000"],
		["too short", "4111 1111 111"],
		["a 20-digit id", "41111111111111111111"],
		["an invalid 16-digit order id", "order 1234567890123456"],
	])("leaves %s alone", (_why, text) => {
		expect(scanText(g, text).findings).toEqual([]);
	});
});

describe("e-mail detector", () => {
	const g = redactAll("emails");

	it("redacts addresses", () => {
		const r = scanText(g, "mail alice.smith+tag@example.co.uk or BOB@Example.COM.");
		expect(r.text).toBe("mail [REDACTED:emails] or [REDACTED:emails].");
		expect(r.findings).toEqual([{ check: "emails", action: "redact", count: 2 }]);
	});

	it("leaves image names, bare hosts and handles alone", () => {
		expect(scanText(g, "icon@2x.png user@localhost @alice").findings).toEqual([]);
	});
});

describe("phone detector", () => {
	const g = redactAll("phones");

	it.each([
		"+1 415 555 2671",
		"+14155552671",
		"+44 20 7946 0958",
		"+1 (415) 555-2671",
		"(415) 555-2671",
		"415-555-2671",
		"415.555.2671",
		"020 7946 0958",
		"07700 900123",
		"01 23 45 67 89",
	])("redacts %s", (phone) => {
		expect(scanText(g, `call ${phone} now`).text).toBe("call [REDACTED:phones] now");
	});

	it.each([
		["a bare digit run (order id)", "order 4155552671"],
		["a long id", "id 123456789012345"],
		["a date", "2024-01-15"],
		["a short local number", "555-1234"],
		["an IP address", "192.168.100.200"],
		["too few digits after +", "+1 555 1234"],
	])("leaves %s alone", (_why, text) => {
		expect(scanText(g, text).findings).toEqual([]);
	});

	it("cuts an international number before trailing digits that would make it too long", () => {
		expect(scanText(g, "+1 415 555 2671 1234 5678").text).toBe("[REDACTED:phones] 5678");
	});
});

describe("custom patterns, actions and compilation", () => {
	const project: GuardrailCheck = { kind: "pattern", action: "redact", pattern: "PROJ-[0-9]{4}", name: "project-code" };

	it("redacts a custom pattern under its name", () => {
		const r = scanText(checks(project), "see PROJ-1234 and PROJ-99 and PROJ-5678");
		expect(r.text).toBe("see [REDACTED:project-code] and PROJ-99 and [REDACTED:project-code]");
		expect(r.findings).toEqual([{ check: "project-code", action: "redact", count: 2 }]);
	});

	it("a custom pattern that can match empty text redacts nothing empty", () => {
		const g = checks({ kind: "pattern", action: "redact", pattern: "x{0,3}", name: "xs" });
		expect(scanText(g, "a xx b").text).toBe("a [REDACTED:xs] b");
	});

	it("block sets blocked to the first block check in check order, and still redacts", () => {
		const g = checks(
			{ kind: "emails", action: "redact" },
			{ kind: "card-numbers", action: "block" },
			{ kind: "secrets", action: "block" },
		);
		const r = scanText(g, `${SECRETS.github} a@b.io 4111 1111 1111 1111`);
		expect(r.blocked).toEqual({ check: "card-numbers", action: "block", count: 1 });
		expect(r.findings.map((f) => f.check)).toEqual(["emails", "card-numbers", "secrets"]);
		expect(r.text).toBe("[REDACTED:secrets] [REDACTED:emails] [REDACTED:card-numbers]");
	});

	it("overlapping matches of two checks become one redaction named after the first to start", () => {
		const g = checks({ kind: "emails", action: "redact" }, { ...project, pattern: "com[0-9]{3}" });
		expect(scanText(g, "x a@b.com123 y").text).toBe("x [REDACTED:emails] y");
	});

	it("findings never hold the matched text", () => {
		const g = checks({ kind: "secrets", action: "block" });
		const r = scanText(g, SECRETS.stripe);
		expect(r.blocked).not.toBeNull();
		expect(JSON.stringify(r.findings)).not.toContain(SECRETS.stripe.slice(8, 16));
	});

	it("memoises compilation per checks array", () => {
		const list: GuardrailCheck[] = [{ kind: "emails", action: "redact" }];
		expect(compileGuardrails(list)).toBe(compileGuardrails(list));
		expect(compileGuardrails([...list])).not.toBe(compileGuardrails(list));
	});

	it.each(["(a+)+", "[0-9]+", "x*", "a{2,}", "(a|ab){1,5}", "(?:a{1,3}){2,4}", "((a)?){1,9}"])(
		"refuses the unsafe pattern %s",
		(pattern) => {
			expect(patternProblem(pattern)).not.toBeNull();
			expect(() => compileGuardrails([{ ...project, pattern }])).toThrow(/project-code is refused/);
		},
	);

	it.each(["PROJ-[0-9]{4}", "(?:ab){2}", "(foo|bar)-[a-z]{1,8}", "[+*]{1,3}\\+?", "(?<year>[0-9]{4})", "a\\{1,\\}"])(
		"accepts the bounded pattern %s",
		(pattern) => {
			expect(patternProblem(pattern)).toBeNull();
		},
	);

	it("every built-in detector's expression passes the same safety rules", () => {
		const g = redactAll("secrets", "card-numbers", "emails", "phones");
		for (const c of g.checks) for (const d of c.detectors) expect(patternProblem(d.re.source), d.re.source).toBeNull();
	});

	it("scans pathological inputs without blowing up", () => {
		const g = redactAll("secrets", "card-numbers", "emails", "phones");
		const inputs = [
			"+1".repeat(5000),
			"a".repeat(20_000),
			"1 ".repeat(5000),
			"eyJ".repeat(5000),
			"-----BEGIN ".repeat(1000),
		];
		for (const text of inputs) expect(scanText(g, `${text}!`).text.length).toBeGreaterThan(0);
	});
});

describe("checkChatInput", () => {
	const request = (): ChatRequest => ({
		model: "fast",
		messages: [
			{ role: "system", content: "You are terse." },
			{
				role: "user",
				content: [
					{ type: "text", text: "my card is 4111 1111 1111 1111" },
					{ type: "image_url", image_url: { url: "https://img.test/a.png" } },
				],
			},
			{
				role: "assistant",
				content: null,
				tool_calls: [
					{
						id: "call_1",
						type: "function",
						function: { name: "save", arguments: JSON.stringify({ email: "a@b.io", n: 1 }) },
					},
				],
			},
			{ role: "tool", tool_call_id: "call_1", content: `saved ${SECRETS.aws}` },
		],
	});

	it("redacts text, text parts, tool-call arguments and tool results in a copy", () => {
		const input = request();
		const before = structuredClone(input);
		const out = checkChatInput(
			input,
			guardrails([
				{ kind: "card-numbers", action: "redact" },
				{ kind: "emails", action: "redact" },
				{ kind: "secrets", action: "redact" },
			]),
		);
		expect(input).toEqual(before);
		expect(out.blocked).toBeNull();
		expect(out.findings).toEqual([
			{ check: "card-numbers", action: "redact", count: 1 },
			{ check: "emails", action: "redact", count: 1 },
			{ check: "secrets", action: "redact", count: 1 },
		]);
		const [system, user, assistant, tool] = out.request.messages;
		expect(system).toBe(input.messages[0]);
		expect(user?.content).toEqual([
			{ type: "text", text: "my card is [REDACTED:card-numbers]" },
			{ type: "image_url", image_url: { url: "https://img.test/a.png" } },
		]);
		const args = assistant?.role === "assistant" ? assistant.tool_calls?.[0]?.function.arguments : undefined;
		expect(JSON.parse(args ?? "null")).toEqual({ email: "[REDACTED:emails]", n: 1 });
		expect(tool?.content).toBe("saved [REDACTED:secrets]");
	});

	it("blocks on a block check, finding secrets inside JSON-escaped tool-call arguments", () => {
		const input = request();
		const escaped = `{"note":"${SECRETS.github.replace("g", "\\u0067")}"}`;
		const assistant = input.messages[2];
		if (assistant?.role !== "assistant" || !assistant.tool_calls?.[0]) throw new Error("fixture");
		assistant.tool_calls[0].function.arguments = escaped;
		const out = checkChatInput(input, guardrails([{ kind: "secrets", action: "block" }]));
		expect(out.blocked).toEqual({ check: "secrets", action: "block", count: 2 });
	});

	it("returns the request itself when nothing matched", () => {
		const input: ChatRequest = { model: "fast", messages: [{ role: "user", content: "hello" }] };
		const out = checkChatInput(input, guardrails([{ kind: "secrets", action: "block" }]));
		expect(out).toEqual({ request: input, findings: [], blocked: null });
		expect(out.request).toBe(input);
	});

	it("blocks a prompt over maxPromptChars as max-prompt-size, and 0 means no limit", () => {
		const input: ChatRequest = { model: "fast", messages: [{ role: "user", content: "x".repeat(101) }] };
		const over = checkChatInput(input, guardrails([], 100));
		expect(over.blocked).toEqual({ check: "max-prompt-size", action: "block", count: 1 });
		expect(checkChatInput(input, guardrails([], 101)).blocked).toBeNull();
		expect(checkChatInput(input, guardrails([], 0)).blocked).toBeNull();
	});

	it("counts contents, text parts and tool-call arguments towards maxPromptChars, not image URLs", () => {
		// 14 (system) + 30 (text part) + 24 (tool-call arguments) + 26 (tool result)
		const total = 14 + 30 + 24 + 26;
		expect(checkChatInput(request(), guardrails([], total - 1)).blocked?.check).toBe("max-prompt-size");
		expect(checkChatInput(request(), guardrails([], total)).blocked).toBeNull();
	});
});

describe("checkEmbeddingsInput", () => {
	const g = guardrails([{ kind: "emails", action: "redact" }], 20);

	it("redacts strings and lists of strings, without touching the input", () => {
		expect(checkEmbeddingsInput("to a@b.io", g)).toEqual({
			input: "to [REDACTED:emails]",
			findings: [{ check: "emails", action: "redact", count: 1 }],
			blocked: null,
		});
		const list = ["plain", "x@y.org"];
		expect(checkEmbeddingsInput(list, g).input).toEqual(["plain", "[REDACTED:emails]"]);
		expect(list).toEqual(["plain", "x@y.org"]);
	});

	it("passes token ids unchanged and enforces the size limit on text", () => {
		const ids = [[1, 2, 3]];
		expect(checkEmbeddingsInput(ids, g)).toEqual({ input: ids, findings: [], blocked: null });
		expect(checkEmbeddingsInput(["0123456789", "0123456789x"], g).blocked?.check).toBe("max-prompt-size");
	});
});

describe("checkChatOutput", () => {
	const completion = (): ChatCompletion => ({
		id: "c1",
		object: "chat.completion",
		created: 1,
		model: "m",
		choices: [
			{
				index: 0,
				message: {
					role: "assistant",
					content: `use ${SECRETS.openaiProject}`,
					tool_calls: [
						{ id: "t", type: "function", function: { name: "f", arguments: '{"phone":"+1 415 555 2671"}' } },
					],
				},
				finish_reason: "stop",
			},
		],
	});

	it("redacts content and tool-call arguments in a copy", () => {
		const input = completion();
		const before = structuredClone(input);
		const out = checkChatOutput(input, [
			{ kind: "secrets", action: "redact" },
			{ kind: "phones", action: "redact" },
		]);
		expect(input).toEqual(before);
		expect(out.blocked).toBeNull();
		expect(out.completion.choices[0]?.message.content).toBe("use [REDACTED:secrets]");
		expect(out.completion.choices[0]?.message.tool_calls?.[0]?.function.arguments).toBe(
			'{"phone":"[REDACTED:phones]"}',
		);
	});

	it("reports a block", () => {
		expect(checkChatOutput(completion(), [{ kind: "secrets", action: "block" }]).blocked).toEqual({
			check: "secrets",
			action: "block",
			count: 1,
		});
	});
});

describe("StreamGuard", () => {
	const blockSecrets = checks({ kind: "secrets", action: "block" }, { kind: "card-numbers", action: "block" });
	const redacting = checks(
		{ kind: "secrets", action: "redact" },
		{ kind: "card-numbers", action: "redact" },
		{ kind: "emails", action: "redact" },
		{ kind: "phones", action: "redact" },
		{ kind: "pattern", action: "redact", pattern: "(?<![A-Za-z])PROJ-[0-9]{4}", name: "project-code" },
	);
	const filler = (n: number) => "lorem ipsum dolor sit amet, ".repeat(Math.ceil(n / 28)).slice(0, n);

	it.each([
		["a secret", SECRETS.stripe],
		["a card number", "4111 1111 1111 1111"],
	])("blocks %s split across two chunks, emitting nothing from it", (_what, secret) => {
		const prefix = `${filler(300)} `;
		const text = `${prefix}${secret} ${filler(300)}`;
		const cut = prefix.length + 6;
		const r = stream(blockSecrets, text, (i) => (i === 0 ? cut : text.length));
		expect(r.blocked?.action).toBe("block");
		expect(prefix.startsWith(r.emitted)).toBe(true);
	});

	it.each([1, 2, 3, 7])("blocks a secret streamed in %i-character chunks before the stream ends", (size) => {
		const prefix = `${filler(400)} `;
		const text = `${prefix}${SECRETS.aws} and then ${filler(300)}`;
		const r = stream(blockSecrets, text, () => size);
		expect(r.blocked).toEqual({ check: "secrets", action: "block", count: 1 });
		expect(r.blockedBeforeEnd).toBe(true);
		expect(prefix.startsWith(r.emitted)).toBe(true);
		expect(r.emitted.length).toBeGreaterThan(0);
	});

	it("blocks at end() a match that only the end of the stream settles", () => {
		const r = stream(blockSecrets, `card 4111 1111 1111 1111`, () => 3);
		expect(r.blocked?.check).toBe("card-numbers");
		// The word before it could be part of no match; the space could (cards are grouped by spaces).
		expect(r.emitted).toBe("card");
	});

	it.each([1, 2, 5, 64])("redacts across %i-character chunks exactly as scanText over the whole text", (size) => {
		const text = `${filler(50)}${SECRETS.anthropic} pay 4111-1111-1111-1111 mail a@b.io${filler(20)}PROJ-1234 xPROJ-4321 ${SECRETS.jwt} ${filler(300)}`;
		const whole = scanText(redacting, text);
		const r = stream(redacting, text, () => size);
		expect(r.emitted).toBe(whole.text);
		expect(r.counts).toEqual(countsOf(whole.findings));
	});

	it("redacts a token far longer than the look-behind, streamed a character at a time", () => {
		const text = `before ${SECRETS.jwt}${"Q".repeat(3000)} after ${PEM} end`;
		const r = stream(redacting, text, () => 1);
		expect(r.emitted).toBe("before [REDACTED:secrets] after [REDACTED:secrets]-----END PRIVATE KEY----- end");
		expect(r.maxHeld).toBeLessThanOrEqual(256 + STREAM_CONTEXT_CHARS);
	});

	it("holds back the look-behind when a custom pattern is among the checks", () => {
		const guard = new StreamGuard(redacting);
		expect(guard.push(filler(1000)).emit).toBe(filler(1000).slice(0, 1000 - 256));
		expect(guard.end().emit).toBe(filler(1000).slice(1000 - 256));
		const none = new StreamGuard(checks(), { lookBehind: 1 });
		expect(none.push("abc").emit).toBe("abc");
	});

	it("with built-in checks only, holds back just the trailing run a match could still grow from", () => {
		const guard = new StreamGuard(redactAll("secrets", "card-numbers", "emails", "phones"));
		// `are` could begin an address or a key; the spaces and the comma before it could not.
		expect(guard.push("Hello there, how are").emit).toBe("Hello there, how ");
		expect(guard.push(" you? Call").emit).toBe("are you? ");
		// Digits, spaces and brackets could be a phone number or a card: held until something ends them.
		expect(guard.push(" (415) 555").emit).toBe("Call");
		expect(guard.push("-2671 or mail").emit).toBe(" [REDACTED:phones] or ");
		// A full stop could be followed by more of the domain (`a@b.io.uk`).
		expect(guard.push(" a@b.io.").emit).toBe("mail ");
		expect(guard.push(" Bye").emit).toBe("[REDACTED:emails]. ");
		expect(guard.end().emit).toBe("Bye");
	});

	it("refuses a look-behind shorter than its detectors need", () => {
		expect(() => new StreamGuard(redacting, { lookBehind: redacting.minLookBehind - 1 })).toThrow(RangeError);
		expect(() => new StreamGuard(redacting, { lookBehind: redacting.minLookBehind })).not.toThrow();
		expect(redacting.minLookBehind).toBeLessThanOrEqual(256);
	});

	it("throws on push after end", () => {
		const guard = new StreamGuard(redacting);
		guard.end();
		expect(() => guard.push("x")).toThrow(/after end/);
	});

	// Every detector, adjacent and overlapping matches, long tails, and plenty of near-misses.
	const corpus = [
		filler(40),
		" PROJ-1234PROJ-5678 xPROJ-8765 sk-learn ",
		SECRETS.openaiProject,
		" (415) 555-2671,",
		SECRETS.edgeway,
		"\n4111 1111 1111 1111 2024 ",
		"x@y.io+44 20 7946 0958 ",
		SECRETS.jwt,
		"Q".repeat(600),
		" 4111 1111 1111 1112 order 4155552671 ",
		PEM,
		"a".repeat(70),
		"@example.com ",
		SECRETS.slack,
		" +1 415 555 2671 ",
		filler(30),
	].join("");

	it("gives the same output as scanText over random chunkings, holding bounded memory", () => {
		const whole = scanText(redacting, corpus);
		expect(whole.findings.length).toBe(5);
		const random = mulberry32(20260101);
		for (let run = 0; run < 60; run++) {
			const max = [1, 4, 16, 90, 400][run % 5] as number;
			const lookBehind = run % 2 === 0 ? 256 : 300 + run;
			const r = stream(redacting, corpus, () => 1 + Math.floor(random() * max), lookBehind);
			expect(r.emitted, `run ${run}`).toBe(whole.text);
			expect(r.counts, `run ${run}`).toEqual(countsOf(whole.findings));
			expect(r.maxHeld, `run ${run}`).toBeLessThanOrEqual(lookBehind + STREAM_CONTEXT_CHARS);
		}
	});

	it("with built-in checks only, gives the same output as scanText over random chunkings", () => {
		const builtIns = redactAll("secrets", "card-numbers", "emails", "phones");
		const whole = scanText(builtIns, corpus);
		const random = mulberry32(20261122);
		for (let run = 0; run < 60; run++) {
			const max = [1, 2, 4, 16, 90, 400][run % 6] as number;
			const r = stream(builtIns, corpus, () => 1 + Math.floor(random() * max));
			expect(r.emitted, `run ${run}`).toBe(whole.text);
			expect(r.counts, `run ${run}`).toEqual(countsOf(whole.findings));
			expect(r.maxHeld, `run ${run}`).toBeLessThanOrEqual(256 + STREAM_CONTEXT_CHARS);
		}
	});

	it("over random chunkings, a block never lets out the blocked text", () => {
		const g = checks({ kind: "emails", action: "redact" }, { kind: "card-numbers", action: "block" });
		const text = `${filler(500)} mail a@b.io pay 4111 1111 1111 1111 ${filler(500)}`;
		const cardAt = text.indexOf("4111");
		const whole = scanText(g, text);
		const beforeCard = scanText(g, text.slice(0, cardAt)).text;
		const random = mulberry32(7);
		for (let run = 0; run < 40; run++) {
			const max = [1, 3, 20, 200][run % 4] as number;
			const r = stream(g, text, () => 1 + Math.floor(random() * max));
			expect(r.blocked?.check, `run ${run}`).toBe("card-numbers");
			expect(whole.text.startsWith(r.emitted), `run ${run}`).toBe(true);
			expect(beforeCard.startsWith(r.emitted), `run ${run}`).toBe(true);
			expect(r.emitted).not.toContain("a@b.io");
		}
	});
});
