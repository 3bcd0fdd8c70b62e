/**
 * The outbound-URL guard: whether the gateway may send a server-side request to a URL a tenant gave
 * it (a webhook destination today; the API plane's upstreams next), and a fetch that applies the
 * guard to every redirect hop.
 *
 * Refused unless `allowPrivate` (the `ALLOW_PRIVATE_OUTBOUND` setting: on in local development and
 * tests, off in staging and production): loopback, "this network", private (RFC 1918), link-local and
 * cloud metadata, CGNAT, benchmarking, IETF-protocol, documentation, multicast, reserved and broadcast
 * IPv4 addresses; their IPv6 forms (IPv4-mapped, IPv4-compatible, NAT64, 6to4) and IPv6 loopback,
 * unspecified, unique-local, link-local, site-local, multicast, documentation (2001:db8::/32,
 * 3fff::/20), benchmarking (2001:2::/48), 5f00::/16, Teredo and discard, IPv4-translated; and
 * host names that only mean something inside a private network (`localhost`, `*.localhost`, `*.local`,
 * `*.internal` such as `metadata.google.internal`, `*.localdomain`, `*.home.arpa`, names without a dot),
 * however many trailing dots they carry; a host name with an empty label is refused.
 * Always refused: schemes other than http and https, and user:password in the URL.
 *
 * Addresses are checked as the URL parser normalises them (WHATWG: `http://2130706433`,
 * `http://0x7f.1` and `http://0177.0.0.1` are all `127.0.0.1`; IPv6 is compressed lowercase hex).
 * A public DNS name that resolves to a private address cannot be checked from a Worker, which has no
 * resolver; Cloudflare's egress does not route to private networks, so deployed Workers cannot reach
 * them that way either.
 */

/** Why a URL was refused: a stable code and a sentence naming what was wrong. */
export type OutboundUrlRefusal = {
	ok: false;
	reason: "invalid-url" | "scheme" | "userinfo" | "private-address" | "private-hostname";
	message: string;
};

/** The guard's verdict on one URL: the parsed URL, or why it is refused. */
export type OutboundUrlCheck = { ok: true; url: URL } | OutboundUrlRefusal;

export interface OutboundUrlOptions {
	/** Allow private, loopback and internal targets (local development and tests only). */
	allowPrivate: boolean;
}

/** [first address, prefix length, what it is] for IPv4. */
const IPV4_BLOCKED: ReadonlyArray<readonly [string, number, string]> = [
	["0.0.0.0", 8, "a 'this network' address"],
	["10.0.0.0", 8, "a private address"],
	["100.64.0.0", 10, "a carrier-grade NAT address"],
	["127.0.0.0", 8, "a loopback address"],
	["169.254.0.0", 16, "a link-local or cloud metadata address"],
	["172.16.0.0", 12, "a private address"],
	["192.0.0.0", 24, "an IETF protocol address"],
	["192.0.2.0", 24, "a documentation address"],
	["192.88.99.0", 24, "a 6to4 relay address"],
	["192.168.0.0", 16, "a private address"],
	["198.18.0.0", 15, "a benchmarking address"],
	["198.51.100.0", 24, "a documentation address"],
	["203.0.113.0", 24, "a documentation address"],
	["224.0.0.0", 4, "a multicast address"],
	["240.0.0.0", 4, "a reserved or broadcast address"],
];

const BLOCKED_NAMES = new Set(["localhost", "metadata", "instance-data"]);
const BLOCKED_SUFFIXES = [".localhost", ".local", ".internal", ".localdomain", ".home.arpa"];

function ipv4Number(text: string): number | null {
	const parts = text.split(".");
	if (parts.length !== 4) return null;
	let n = 0;
	for (const p of parts) {
		if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return null;
		n = n * 256 + Number(p);
	}
	return n;
}

const IPV4_RANGES = IPV4_BLOCKED.map(([base, bits, what]) => ({
	base: ipv4Number(base) as number,
	size: 2 ** (32 - bits),
	what,
}));

/** What a (numeric) IPv4 address is if it is not public, else null. */
function ipv4Problem(address: number): string | null {
	for (const r of IPV4_RANGES) if (address >= r.base && address < r.base + r.size) return r.what;
	return null;
}

/** The eight 16-bit groups of an IPv6 address as the URL parser serialises it (no brackets), or null. */
function ipv6Groups(text: string): number[] | null {
	const halves = text.split("::");
	if (halves.length > 2) return null;
	const parse = (s: string) => (s === "" ? [] : s.split(":").map((g) => Number.parseInt(g, 16)));
	const head = parse(halves[0] ?? "");
	const tail = halves.length === 2 ? parse(halves[1] ?? "") : [];
	const groups = halves.length === 2 ? [...head, ...Array(8 - head.length - tail.length).fill(0), ...tail] : head;
	if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return null;
	return groups;
}

const v4Of = (hi: number, lo: number) => hi * 65536 + lo;

/** What an IPv6 address is if it is not public, else null. */
function ipv6Problem(g: number[]): string | null {
	const [a = 0, b = 0, c = 0, d = 0, e = 0, f = 0, h6 = 0, h7 = 0] = g;
	const embedded = v4Of(h6, h7);
	const zeroTo = (n: number) => g.slice(0, n).every((x) => x === 0);
	if (zeroTo(7) && h7 === 1) return "the IPv6 loopback address";
	if (zeroTo(8)) return "the IPv6 unspecified address";
	// ::ffff:0:a.b.c.d (IPv4-translated, ::ffff:0:0/96) carries an IPv4 address.
	if (zeroTo(4) && e === 0xffff && f === 0) {
		const inner = ipv4Problem(embedded);
		return inner && `${inner} (IPv4-translated)`;
	}
	// ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated) carry an IPv4 address.
	if (zeroTo(5) && (f === 0xffff || f === 0)) {
		const inner = ipv4Problem(embedded);
		return f === 0
			? `an IPv4-compatible IPv6 address${inner ? ` of ${inner}` : ""}`
			: inner && `${inner} (IPv4-mapped)`;
	}
	// NAT64: the well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48.
	if (a === 0x64 && b === 0xff9b) {
		if (c === 0 && d === 0 && e === 0 && f === 0) {
			const inner = ipv4Problem(embedded);
			return inner && `${inner} (NAT64)`;
		}
		if (c === 1) return "a local-use NAT64 address";
	}
	if (a === 0x2002) {
		const inner = ipv4Problem(v4Of(b, c));
		return inner && `${inner} (6to4)`;
	}
	if (a === 0x2001 && b === 0) return "a Teredo address";
	if (a === 0x2001 && b === 0xdb8) return "an IPv6 documentation address";
	if (a === 0x3fff && b < 0x1000) return "an IPv6 documentation address";
	if (a === 0x2001 && b === 2 && c === 0) return "an IPv6 benchmarking address";
	if (a === 0x5f00) return "a reserved IPv6 (SRv6 SID) address";
	if (a === 0x100 && b === 0 && c === 0 && d === 0) return "an IPv6 discard address";
	if ((a & 0xfe00) === 0xfc00) return "an IPv6 unique-local (private) address";
	if ((a & 0xffc0) === 0xfe80) return "an IPv6 link-local address";
	if ((a & 0xffc0) === 0xfec0) return "an IPv6 site-local address";
	if ((a & 0xff00) === 0xff00) return "an IPv6 multicast address";
	return null;
}

/**
 * Whether a server-side request to `input` is allowed. Pure: no I/O. The URL is judged as the URL
 * parser normalises it, so every spelling of an address gets the same answer.
 */
export function checkOutboundUrl(input: string | URL, options: OutboundUrlOptions): OutboundUrlCheck {
	let url: URL;
	try {
		url = new URL(input);
	} catch {
		return { ok: false, reason: "invalid-url", message: "is not a valid URL" };
	}
	if (url.protocol !== "http:" && url.protocol !== "https:") {
		return {
			ok: false,
			reason: "scheme",
			message: `uses ${url.protocol.slice(0, -1)}; only http and https are allowed`,
		};
	}
	if (url.username || url.password) {
		return { ok: false, reason: "userinfo", message: "must not carry a user name or password" };
	}
	if (options.allowPrivate) return { ok: true, url };
	const host = url.hostname.toLowerCase();
	let problem: string | null = null;
	if (host.startsWith("[")) {
		const groups = ipv6Groups(host.slice(1, -1));
		problem = groups ? ipv6Problem(groups) : "an IPv6 address that cannot be read";
	} else {
		// Any number of trailing dots names the same host; an empty label anywhere else is no host name.
		const name = host.replace(/\.+$/, "");
		if (name === "" || name.split(".").includes("")) {
			return { ok: false, reason: "invalid-url", message: "has an empty label in its host name" };
		}
		const v4 = ipv4Number(name);
		if (v4 !== null) problem = ipv4Problem(v4);
		else {
			if (BLOCKED_NAMES.has(name) || BLOCKED_SUFFIXES.some((s) => name.endsWith(s))) {
				return { ok: false, reason: "private-hostname", message: `points at ${name}, an internal host name` };
			}
			if (!name.includes(".")) {
				return { ok: false, reason: "private-hostname", message: `points at ${name}, a host name without a domain` };
			}
		}
	}
	if (problem) return { ok: false, reason: "private-address", message: `points at ${problem}` };
	return { ok: true, url };
}

/** Thrown by {@link guardedFetch} when a URL, or a redirect it was sent to, is refused. */
export class OutboundUrlError extends Error {
	readonly reason: OutboundUrlRefusal["reason"];
	constructor(refusal: OutboundUrlRefusal, what: string) {
		super(`${what} ${refusal.message}`);
		this.name = "OutboundUrlError";
		this.reason = refusal.reason;
	}
}

export interface GuardedFetchOptions extends OutboundUrlOptions {
	/** Redirects followed at most (default 5); one more answers with the last 3xx response. */
	maxRedirects?: number;
}

/**
 * Only the redirects that keep the method and body are followed: a 301/302/303 would turn a POST into
 * a GET (or, repeated as given, resend the body and its signature somewhere it was not meant for), so
 * it is the final answer.
 */
const REDIRECTS = new Set([307, 308]);

/**
 * `fetch` with the guard on the URL and on every redirect hop (307 and 308 are followed by hand, up to
 * `maxRedirects`, each target checked first; 301, 302 and 303 are answered as they are). Every hop
 * repeats the request as given — method, headers and body — so `init.body` must be reusable (a string
 * or bytes, not a stream). Throws {@link OutboundUrlError} for a refused URL or redirect target.
 */
export async function guardedFetch(
	input: string | URL,
	init: RequestInit & { body?: string | Uint8Array | null },
	options: GuardedFetchOptions,
): Promise<Response> {
	const maxRedirects = options.maxRedirects ?? 5;
	let target = checkOutboundUrl(input, options);
	if (!target.ok) throw new OutboundUrlError(target, "the URL");
	for (let hop = 0; ; hop++) {
		const res = await fetch(target.url, { ...init, redirect: "manual" });
		const location = res.headers.get("location");
		if (!REDIRECTS.has(res.status) || location === null || hop >= maxRedirects) return res;
		await res.body?.cancel();
		let next: string;
		try {
			next = new URL(location, target.url).href;
		} catch {
			throw new OutboundUrlError(
				{ ok: false, reason: "invalid-url", message: "is not a valid URL" },
				"a redirect target",
			);
		}
		target = checkOutboundUrl(next, options);
		if (!target.ok) throw new OutboundUrlError(target, `a redirect (${res.status}) target`);
	}
}
