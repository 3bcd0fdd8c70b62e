/** The outbound-URL guard: every spelling of a private target is refused, public ones pass, and redirects are checked hop by hop. */
import { afterEach, describe, expect, it, vi } from "vitest";
import { checkOutboundUrl, guardedFetch, OutboundUrlError } from "../../src/http";

const strict = { allowPrivate: false };

describe("checkOutboundUrl", () => {
	it("normalises non-dotted IPv4 forms the way these tests assume (workerd's URL parser)", () => {
		expect(new URL("http://2130706433/").hostname).toBe("127.0.0.1");
		expect(new URL("http://0x7f.1/").hostname).toBe("127.0.0.1");
		expect(new URL("http://0177.0.0.1/").hostname).toBe("127.0.0.1");
		expect(new URL("http://[::ffff:127.0.0.1]/").hostname).toBe("[::ffff:7f00:1]");
	});

	it.each([
		// IPv4, dotted
		["http://127.0.0.1/", "private-address"],
		["http://127.1.2.3:8080/x", "private-address"],
		["http://0.0.0.0/", "private-address"],
		["http://10.1.2.3/", "private-address"],
		["http://172.16.0.1/", "private-address"],
		["http://172.31.255.255/", "private-address"],
		["http://192.168.1.1/", "private-address"],
		["http://169.254.169.254/latest/meta-data/", "private-address"],
		["http://169.254.0.1/", "private-address"],
		["http://100.64.0.1/", "private-address"],
		["http://100.127.255.255/", "private-address"],
		["http://192.0.0.8/", "private-address"],
		["http://198.18.0.1/", "private-address"],
		["http://198.19.255.255/", "private-address"],
		["http://224.0.0.1/", "private-address"],
		["http://239.255.255.250/", "private-address"],
		["http://240.0.0.1/", "private-address"],
		["http://255.255.255.255/", "private-address"],
		["http://127.0.0.1./", "private-address"],
		["http://127.0.0.1../", "private-address"],
		["http://169.254.169.254.../", "private-address"],
		// IPv4, other spellings the URL parser normalises
		["http://2130706433/", "private-address"],
		["http://0x7f000001/", "private-address"],
		["http://0x7f.1/", "private-address"],
		["http://0177.0.0.1/", "private-address"],
		["http://127.1/", "private-address"],
		["http://%31%32%37.0.0.1/", "private-address"],
		["http://0xa9.0xfe.0xa9.0xfe/", "private-address"],
		// IPv6
		["http://[::1]/", "private-address"],
		["http://[0:0:0:0:0:0:0:1]/", "private-address"],
		["http://[::]/", "private-address"],
		["http://[fc00::1]/", "private-address"],
		["http://[fd12:3456::1]/", "private-address"],
		["http://[fd00:ec2::254]/", "private-address"],
		["http://[fe80::1]/", "private-address"],
		["http://[febf::1]/", "private-address"],
		["http://[fec0::1]/", "private-address"],
		["http://[ff02::1]/", "private-address"],
		["http://[::ffff:127.0.0.1]/", "private-address"],
		["http://[::ffff:7f00:1]/", "private-address"],
		["http://[::ffff:169.254.169.254]/", "private-address"],
		["http://[::ffff:10.0.0.1]/", "private-address"],
		["http://[::127.0.0.1]/", "private-address"],
		["http://[64:ff9b::127.0.0.1]/", "private-address"],
		["http://[64:ff9b::a9fe:a9fe]/", "private-address"],
		["http://[64:ff9b:1::1]/", "private-address"],
		["http://[2002:7f00:1::]/", "private-address"],
		["http://[2001:db8::1]/", "private-address"],
		["http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "private-address"],
		["http://[::ffff:0:127.0.0.1]/", "private-address"],
		["http://[::ffff:0:a9fe:a9fe]/", "private-address"],
		["http://[::ffff:0:10.0.0.1]/", "private-address"],
		["http://[3fff::1]/", "private-address"],
		["http://[3fff:fff:ffff::1]/", "private-address"],
		["http://[5f00::1]/", "private-address"],
		["http://[5f00:ffff::1]/", "private-address"],
		["http://[2001:2::1]/", "private-address"],
		["http://[2001:2:0:ffff::1]/", "private-address"],
		// host names
		["http://localhost/", "private-hostname"],
		["http://LOCALHOST:8080/", "private-hostname"],
		["http://localhost./", "private-hostname"],
		["http://localhost../", "private-hostname"],
		["http://metadata.google.internal../", "private-hostname"],
		["http://api.localhost.../", "private-hostname"],
		["http://a..example.com/", "invalid-url"],
		["http://api.localhost/", "private-hostname"],
		["http://metadata.google.internal/computeMetadata/v1/", "private-hostname"],
		["http://metadata/", "private-hostname"],
		["http://service.internal/", "private-hostname"],
		["http://printer.local/", "private-hostname"],
		["http://box.localdomain/", "private-hostname"],
		["http://nas.home.arpa/", "private-hostname"],
		["http://intranet/", "private-hostname"],
		// always refused
		["ftp://example.com/", "scheme"],
		["file:///etc/passwd", "scheme"],
		["gopher://example.com/", "scheme"],
		["https://user:pass@example.com/", "userinfo"],
		["https://user@example.com/", "userinfo"],
		["not a url", "invalid-url"],
	])("refuses %s (%s)", (url, reason) => {
		const check = checkOutboundUrl(url, strict);
		expect(check.ok).toBe(false);
		if (!check.ok) {
			expect(check.reason).toBe(reason);
			expect(check.message).toBeTruthy();
		}
	});

	it.each([
		"https://hooks.example.com/in",
		"http://example.com:8080/x?y=1",
		"https://8.8.8.8/",
		"https://1.1.1.1/",
		"http://172.15.255.255/",
		"http://172.32.0.1/",
		"http://100.63.255.255/",
		"http://100.128.0.1/",
		"http://169.253.255.255/",
		"http://198.17.255.255/",
		"http://223.255.255.255/",
		"https://[2606:4700:4700::1111]/",
		"https://[::ffff:8.8.8.8]/",
		"https://[64:ff9b::8.8.8.8]/",
		"https://[::ffff:0:8.8.8.8]/",
		"https://[3fff:1000::1]/",
		"https://[5f01::1]/",
		"https://[2001:2:1::1]/",
		"https://example.com./",
		"https://local.example.com/",
		"https://internal.example.com/",
	])("allows the public target %s", (url) => {
		expect(checkOutboundUrl(url, strict)).toMatchObject({ ok: true });
	});

	it("names what is wrong", () => {
		expect(checkOutboundUrl("http://0x7f.1/", strict)).toMatchObject({ message: "points at a loopback address" });
		expect(checkOutboundUrl("http://169.254.169.254/", strict)).toMatchObject({
			message: "points at a link-local or cloud metadata address",
		});
	});

	it("allows private targets with allowPrivate, but never other schemes or credentials", () => {
		for (const url of ["http://127.0.0.1:9/", "http://[::1]/", "http://localhost/", "http://10.0.0.1/"]) {
			expect(checkOutboundUrl(url, { allowPrivate: true })).toMatchObject({ ok: true });
		}
		expect(checkOutboundUrl("ftp://127.0.0.1/", { allowPrivate: true })).toMatchObject({ reason: "scheme" });
		expect(checkOutboundUrl("http://a:b@127.0.0.1/", { allowPrivate: true })).toMatchObject({ reason: "userinfo" });
	});
});

describe("guardedFetch", () => {
	afterEach(() => {
		vi.restoreAllMocks();
	});

	/** A fake network: each URL answers with what the map says; every request is recorded. */
	function network(answers: Record<string, () => Response>) {
		const seen: Array<{ url: string; method: string; body: string; redirect: string }> = [];
		vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
			const request = new Request(input, init);
			seen.push({ url: request.url, method: request.method, body: await request.text(), redirect: request.redirect });
			const answer = answers[request.url];
			return answer ? answer() : new Response("no such host", { status: 599 });
		});
		return seen;
	}
	const redirect = (status: number, location: string) => () => new Response(null, { status, headers: { location } });

	it("refuses the URL itself without sending anything", async () => {
		const seen = network({});
		await expect(guardedFetch("http://127.0.0.1/in", { method: "POST" }, strict)).rejects.toBeInstanceOf(
			OutboundUrlError,
		);
		expect(seen).toEqual([]);
	});

	it("does not follow a redirect to a private address", async () => {
		const seen = network({ "https://hooks.example.com/in": redirect(307, "http://127.0.0.1:9/steal") });
		const error = await guardedFetch("https://hooks.example.com/in", { method: "POST", body: "x" }, strict).catch(
			(e: unknown) => e,
		);
		expect(error).toBeInstanceOf(OutboundUrlError);
		expect((error as OutboundUrlError).message).toBe("a redirect (307) target points at a loopback address");
		expect(seen.map((s) => s.url)).toEqual(["https://hooks.example.com/in"]);
		expect(seen[0]?.redirect).toBe("manual");
	});

	it("follows 307 and 308 to allowed targets, repeating the POST and its body, relative locations included", async () => {
		const seen = network({
			"https://a.example.com/in": redirect(307, "https://b.example.com/in"),
			"https://b.example.com/in": redirect(308, "/moved"),
			"https://b.example.com/moved": () => new Response("ok"),
		});
		const res = await guardedFetch("https://a.example.com/in", { method: "POST", body: "payload" }, strict);
		expect(await res.text()).toBe("ok");
		expect(seen.map((s) => [s.url, s.method, s.body])).toEqual([
			["https://a.example.com/in", "POST", "payload"],
			["https://b.example.com/in", "POST", "payload"],
			["https://b.example.com/moved", "POST", "payload"],
		]);
	});

	it.each([301, 302, 303])("answers a %i as it is: the POST and its body are not sent on", async (status) => {
		const seen = network({
			"https://a.example.com/in": redirect(status, "https://b.example.com/in"),
			"https://b.example.com/in": () => new Response("ok"),
		});
		const res = await guardedFetch("https://a.example.com/in", { method: "POST", body: "payload" }, strict);
		expect(res.status).toBe(status);
		expect(seen.map((s) => s.url)).toEqual(["https://a.example.com/in"]);
	});

	it("stops after maxRedirects and answers with the last redirect", async () => {
		const seen = network({
			"https://a.example.com/1": redirect(308, "https://a.example.com/2"),
			"https://a.example.com/2": redirect(308, "https://a.example.com/3"),
		});
		const res = await guardedFetch("https://a.example.com/1", {}, { ...strict, maxRedirects: 1 });
		expect(res.status).toBe(308);
		expect(seen).toHaveLength(2);
	});
});
