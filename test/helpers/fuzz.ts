/**
 * fast-check arbitraries for the fuzz test: values that follow an OpenAPI schema, and hostile JSON
 * texts, bodies, path segments, query strings and header values.
 */
import fc from "fast-check";

/** The subset of JSON Schema (as @hono/zod-openapi writes it) the generators read. */
export interface JsonSchema {
	$ref?: string;
	type?: string | string[];
	enum?: unknown[];
	const?: unknown;
	anyOf?: JsonSchema[];
	oneOf?: JsonSchema[];
	allOf?: JsonSchema[];
	properties?: Record<string, JsonSchema>;
	required?: string[];
	items?: JsonSchema;
	minItems?: number;
	maxItems?: number;
	minLength?: number;
	maxLength?: number;
	pattern?: string;
	format?: string;
	minimum?: number;
	maximum?: number;
	exclusiveMinimum?: number;
	exclusiveMaximum?: number;
}

/** Resolves `#/components/schemas/X` references against the OpenAPI document. */
export type SchemaResolver = (ref: string) => JsonSchema;

/** A string matching `pattern` (anchored as OpenAPI patterns are written), or any short string if fast-check cannot. */
function matching(pattern: string): fc.Arbitrary<string> {
	try {
		return fc.stringMatching(new RegExp(pattern));
	} catch {
		return fc.string({ maxLength: 40 });
	}
}

function stringFor(s: JsonSchema): fc.Arbitrary<string> {
	if (s.pattern) return matching(s.pattern);
	if (s.format === "uri" || s.format === "url") {
		return fc.constantFrom("https://destination.test/hook", "http://127.0.0.1:9/hook", "https://[::1]/x");
	}
	if (s.format === "date-time") {
		return fc
			.date({ min: new Date("2000-01-01T00:00:00Z"), max: new Date("2100-01-01T00:00:00Z"), noInvalidDate: true })
			.map((d) => d.toISOString());
	}
	if (s.format === "email") return fc.emailAddress();
	const minLength = s.minLength ?? 0;
	return fc.string({ minLength, maxLength: Math.max(minLength, Math.min(s.maxLength ?? 24, 24)) });
}

/** Values for object members by name, tried alongside what their schema gives (e.g. configured model aliases). */
export type MemberHints = Record<string, fc.Arbitrary<unknown>>;

/** Values that (mostly) satisfy `schema`, so generated requests get past validation into the handlers. */
export function schemaValue(
	schema: JsonSchema,
	resolve: SchemaResolver,
	hints: MemberHints = {},
	depth = 0,
): fc.Arbitrary<unknown> {
	const value = (s: JsonSchema, d: number) => schemaValue(s, resolve, hints, d);
	if (schema.$ref) return value(resolve(schema.$ref), depth);
	if (depth > 8) return fc.constant(null);
	if (schema.const !== undefined) return fc.constant(schema.const);
	if (schema.enum && schema.enum.length > 0) return fc.constantFrom(...schema.enum);
	const alternatives = schema.anyOf ?? schema.oneOf;
	if (alternatives && alternatives.length > 0) {
		return fc.oneof(...alternatives.map((s) => value(s, depth)));
	}
	if (schema.allOf?.[0]) return value(schema.allOf[0], depth);
	const types = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
	if (types.length > 1) return fc.oneof(...types.map((type) => value({ ...schema, type }, depth)));
	switch (types[0] ?? (schema.properties ? "object" : undefined)) {
		case "string":
			return stringFor(schema);
		case "integer": {
			const min = schema.minimum ?? (schema.exclusiveMinimum ?? -1001) + 1;
			const max = schema.maximum ?? (schema.exclusiveMaximum ?? 1_000_001) - 1;
			return fc.integer({ min: Math.max(min, -1e9), max: Math.min(max, 1e9) });
		}
		case "number":
			return fc.double({ min: schema.minimum ?? -1e6, max: schema.maximum ?? 1e6, noNaN: true });
		case "boolean":
			return fc.boolean();
		case "null":
			return fc.constant(null);
		case "array": {
			const minLength = schema.minItems ?? 0;
			const item = schema.items ? value(schema.items, depth + 1) : fc.jsonValue({ maxDepth: 1 });
			return fc.array(item, { minLength, maxLength: Math.max(minLength, Math.min(schema.maxItems ?? 3, 3)) });
		}
		case "object": {
			const properties = schema.properties ?? {};
			const record: Record<string, fc.Arbitrary<unknown>> = {};
			for (const [key, s] of Object.entries(properties)) {
				const hint = hints[key];
				record[key] = hint ? fc.oneof(hint, value(s, depth + 1)) : value(s, depth + 1);
			}
			return fc.record(record, { requiredKeys: (schema.required ?? []).filter((k) => k in properties) });
		}
		default:
			return fc.jsonValue({ maxDepth: 2 });
	}
}

/** `n` arrays (or objects) nested in each other, as JSON text. */
const nestedArrays = (n: number) => `${"[".repeat(n)}${"]".repeat(n)}`;
const nestedObjects = (n: number) => `${'{"a":'.repeat(n)}null${"}".repeat(n)}`;

/** Texts that stand where a JSON value goes: odd but valid values, and things that are not JSON at all. */
export const hostileValueText: fc.Arbitrary<string> = fc.oneof(
	{ weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
	{ weight: 2, arbitrary: fc.integer({ min: 1, max: 5000 }).map(nestedArrays) },
	{ weight: 2, arbitrary: fc.integer({ min: 1, max: 3000 }).map(nestedObjects) },
	{ weight: 1, arbitrary: fc.integer({ min: 0, max: 1_500_000 }).map((n) => JSON.stringify("x".repeat(n))) },
	{ weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 40 }).map((s) => JSON.stringify(s)) },
	{
		weight: 4,
		arbitrary: fc.constantFrom(
			"NaN",
			"Infinity",
			"-Infinity",
			"1e400",
			"-1e400",
			"-0",
			"0x10",
			"01",
			"1.",
			"undefined",
			"null",
			"[]",
			"{}",
			'""',
			"-1",
			"0",
			"1.5",
			"9007199254740993",
			"1e-400",
			'"\\ud800"',
			'"\\udfff\\ud800"',
			'"\\u0000"',
			'"\\uFFFF"',
			'"../../etc/passwd"',
			'"\' OR 1=1 --"',
			'"<script>alert(1)</script>"',
			'{"__proto__":{"polluted":true}}',
			'{"constructor":{"prototype":{"polluted":true}}}',
			'["__proto__"]',
			"true false",
			"[1,]",
			'{"a":1,}',
			"'single'",
		),
	},
);

/** A JSON object text with the member `key: valueText` added (valueText is spliced in raw). */
export function withMember(objectText: string, key: string, valueText: string): string {
	const member = `${JSON.stringify(key)}:${valueText}`;
	return objectText === "{}" ? `{${member}}` : `{${member},${objectText.slice(1)}`;
}

/** Ways to spoil a valid JSON body text. */
export function spoiled(valid: unknown): fc.Arbitrary<string> {
	const text = JSON.stringify(valid) ?? "null";
	const isObject = typeof valid === "object" && valid !== null && !Array.isArray(valid);
	const keys = isObject ? Object.keys(valid) : [];
	const keyArb = keys.length > 0 ? fc.oneof(fc.constantFrom(...keys), fc.string()) : fc.string();
	const options: fc.WeightedArbitrary<string>[] = [
		{ weight: 1, arbitrary: fc.constant(text) },
		{
			weight: 1,
			arbitrary: fc.integer({ min: 0, max: Math.max(0, text.length - 1) }).map((cut) => text.slice(0, cut)),
		},
		{ weight: 1, arbitrary: fc.constantFrom(`[${text}]`, JSON.stringify(text)) },
	];
	if (isObject) {
		options.push(
			{
				// A member replaced (a later duplicate key wins in JSON.parse) or added, with a hostile value.
				weight: 3,
				arbitrary: fc
					.tuple(keyArb, hostileValueText, fc.boolean())
					.map(([key, value, last]) =>
						last
							? `${text.slice(0, -1)}${text === "{}" ? "" : ","}${JSON.stringify(key)}:${value}}`
							: withMember(text, key, value),
					),
			},
			{
				// A new member nested deep: the cache key, token estimate and provider translation all walk it.
				weight: 3,
				arbitrary: fc
					.tuple(fc.string({ minLength: 1, maxLength: 8 }), fc.constantFrom(65, 1000, 3000, 6000, 20_000), fc.boolean())
					.map(([key, n, arrays]) => withMember(text, key, arrays ? nestedArrays(n) : nestedObjects(n))),
			},
			{
				weight: 1,
				arbitrary: fc
					.constantFrom("__proto__", "constructor", "prototype")
					.map((key) =>
						withMember(
							text,
							key,
							'{"polluted":true,"prototype":{"polluted":true},"scopes":["admin"],"tenantId":"edgeway"}',
						),
					),
			},
		);
	}
	return fc.oneof(...options);
}

/** Bodies that are not JSON, or not text: raw strings (lone surrogates included), invalid UTF-8, forms, nothing. */
export const hostileBody: fc.Arbitrary<string | Uint8Array> = fc.oneof(
	hostileValueText,
	fc.string({ unit: "binary", maxLength: 200 }),
	fc.uint8Array({ maxLength: 200 }),
	fc.constantFrom(
		"",
		"a=1&b=2",
		"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--",
		new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xc0, 0xaf, 0x22, 0x7d]), // {"a":"<invalid UTF-8>"}
		new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), // a BOM, then {}
		new Uint8Array([0xed, 0xa0, 0x80]), // an encoded lone surrogate
	),
);

/** Path segments sent raw (not encoded): traversal, odd percent-encodings, unicode, very long. */
export const hostileSegment: fc.Arbitrary<string> = fc.oneof(
	fc.constantFrom(
		"",
		".",
		"..",
		"%2e%2e",
		"..%2f..%2fadmin",
		"%2F",
		"%00",
		"%",
		"%ZZ",
		"%C0%AF",
		"%ED%A0%80",
		"%F0%9F%98%80",
		"😀",
		"ｍｅ",
		"%E2%80%AE",
		"a;b=c",
		"\\..\\..",
		"{endpointId}",
		":id",
		"*",
		"we_AAAAAAAAAAAAAAAA",
		"key_%00000000000000",
		"edgeway",
		"EDGEWAY",
	),
	fc.integer({ min: 100, max: 6000 }).map((n) => "a".repeat(n)),
	fc.string({ unit: "grapheme", maxLength: 20 }).map(encodeURIComponent),
	fc.string({ maxLength: 20 }),
);

/** Printable ASCII header values (what `Headers` accepts), short or long. */
export const headerValue: fc.Arbitrary<string> = fc.oneof(
	{ weight: 4, arbitrary: fc.string({ maxLength: 80 }) },
	{ weight: 1, arbitrary: fc.integer({ min: 100, max: 8000 }).map((n) => "v".repeat(n)) },
);
