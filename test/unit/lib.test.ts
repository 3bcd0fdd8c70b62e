/** The kernel (src/lib): encodings, bounded maps, the per-isolate memo, timeouts and JSON helpers. */
import { describe, expect, it } from "vitest";
import {
	canonicalJson,
	fromBase64,
	fromBase64Text,
	fromHex,
	isRecord,
	Lru,
	orTimeout,
	perIsolate,
	randomHex,
	sleep,
	TIMED_OUT,
	TtlLru,
	toBase64,
	toBase64Url,
	toHex,
	untilAborted,
	within,
} from "../../src/lib";
import { mulberry32 } from "../helpers/random";

const never = new Promise<never>(() => {});

describe("base64 and hex", () => {
	it("round-trips bytes of every length through both alphabets and hex", () => {
		const random = mulberry32(7);
		for (let n = 0; n <= 70; n++) {
			const bytes = Uint8Array.from({ length: n }, () => Math.floor(random() * 256));
			expect(fromBase64(toBase64(bytes))).toEqual(bytes);
			expect(fromBase64(toBase64Url(bytes))).toEqual(bytes);
			expect(fromBase64(toBase64(bytes).replace(/=+$/, ""))).toEqual(bytes);
			expect(fromHex(toHex(bytes))).toEqual(bytes);
		}
	});

	it("encodes strings as their UTF-8 and decodes text back", () => {
		expect(toBase64("é€")).toBe("w6nigqw=");
		expect(toBase64Url("é€")).toBe("w6nigqw");
		expect(fromBase64Text("w6nigqw=")).toBe("é€");
		expect(fromBase64Text("not base64!")).toBeNull();
	});

	it("refuses what is not base64: other characters, mixed alphabets, impossible lengths, misplaced padding", () => {
		for (const bad of ["a", "abcde", "ab=", "abc==", "a=bc", "ab+_", "ab cd", "ab\ncd", "ab==cd", "a===", "€€€€"]) {
			expect(fromBase64(bad), JSON.stringify(bad)).toBeNull();
		}
		expect(fromBase64("")).toEqual(new Uint8Array(0));
		expect(fromBase64("+/8=")).toEqual(Uint8Array.of(0xfb, 0xff));
		expect(fromBase64("-_8")).toEqual(Uint8Array.of(0xfb, 0xff));
	});

	it("refuses what is not hex: odd length or other characters; accepts either case", () => {
		for (const bad of ["a", "abc", "0g", "0x00", " 00"]) expect(fromHex(bad), bad).toBeNull();
		expect(fromHex("00fFaB")).toEqual(Uint8Array.of(0, 255, 171));
		expect(randomHex(16)).toMatch(/^[0-9a-f]{32}$/);
	});
});

describe("Lru and TtlLru", () => {
	it("forgets the least recently used entry; get counts as a use, peek does not", () => {
		const lru = new Lru<string, number>(2);
		lru.set("a", 1);
		lru.set("b", 2);
		expect(lru.get("a")).toBe(1);
		lru.set("c", 3);
		expect([...lru.values()]).toEqual([1, 3]);
		expect(lru.peek("a")).toBe(1);
		lru.set("d", 4);
		expect(lru.peek("a")).toBeUndefined();
		expect(lru.size).toBe(2);
		expect(() => new Lru(0)).toThrow();
	});

	it("expires entries at their own time", () => {
		const ttl = new TtlLru<string, number>(10);
		ttl.set("a", 1, 1000);
		expect(ttl.get("a", 999)).toBe(1);
		expect(ttl.get("a", 1000)).toBeUndefined();
		expect(ttl.size).toBe(0);
	});
});

describe("perIsolate", () => {
	it("makes one value per key object, and another for another object", () => {
		let made = 0;
		const clientFor = perIsolate((key: object) => ({ key, n: ++made }));
		const a = {};
		const b = {};
		expect(clientFor(a)).toBe(clientFor(a));
		expect(clientFor(b)).not.toBe(clientFor(a));
		expect(made).toBe(2);
	});
});

describe("timeouts", () => {
	it("within answers the promise, or TIMED_OUT when it does not settle in time", async () => {
		expect(await within(Promise.resolve(1), 60_000)).toBe(1);
		expect(await within(never, 0)).toBe(TIMED_OUT);
		await expect(within(Promise.reject(new Error("boom")), 60_000)).rejects.toThrow("boom");
	});

	it("orTimeout rejects with the caller's error when time runs out", async () => {
		expect(await orTimeout(Promise.resolve("ok"), 60_000, () => new Error("late"))).toBe("ok");
		await expect(orTimeout(never, 0, () => new Error("late"))).rejects.toThrow("late");
	});

	it("untilAborted rejects as soon as the signal aborts, with its reason or the caller's error", async () => {
		await expect(untilAborted(never, AbortSignal.abort("gone"))).rejects.toBe("gone");
		const controller = new AbortController();
		const waiting = untilAborted(never, controller.signal, () => new Error("aborted"));
		controller.abort();
		await expect(waiting).rejects.toThrow("aborted");
		expect(await untilAborted(Promise.resolve(2), new AbortController().signal)).toBe(2);
	});

	it("sleep ends at once when its signal aborts, before or during the wait", async () => {
		expect(await sleep(60_000, AbortSignal.abort())).toBeUndefined();
		const controller = new AbortController();
		const sleeping = sleep(60_000, controller.signal);
		controller.abort();
		expect(await sleeping).toBeUndefined();
		expect(await sleep(0)).toBeUndefined();
	});
});

describe("JSON helpers", () => {
	it("isRecord is true for plain objects only", () => {
		expect([{}, { a: 1 }].map(isRecord)).toEqual([true, true]);
		expect([null, [], "x", 1, undefined].map(isRecord)).toEqual([false, false, false, false, false]);
	});

	it("canonicalJson sorts members, drops undefined ones and writes no whitespace", () => {
		expect(canonicalJson({ b: [1, { d: null, c: "x" }], a: undefined, é: true })).toBe(
			'{"b":[1,{"c":"x","d":null}],"é":true}',
		);
	});
});
