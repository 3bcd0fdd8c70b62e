// Development JWTs: the one place `npm run token` and `npm run dev` mint them.
import { parseArgs } from "node:util";
import { SignJWT } from "jose";
import {
	ensureDevSecret,
	jwtVars,
	knownScopes,
	knownTiers,
	MIN_SECRET_LENGTH,
	readDevVars,
	readWranglerVars,
	ScriptError,
} from "./project.mjs";

export const DEFAULT_SUB = "dev-user";
export const DEFAULT_SCOPE = "api:read";
export const DEFAULT_TTL_S = 3600;
const MAX_TTL_S = 365 * 24 * 3600;

/** Exit code for a bad command line. */
export const USAGE_EXIT = 2;

export function usage() {
	return `Usage: npm run -s token -- --tenant <id> [--scope "<scopes>"] [--tier <tier>] [--sub <subject>] [--ttl <seconds>] [--env <name>]

Prints a development HS256 JWT for the gateway, signed with JWT_HS256_SECRET from .dev.vars
(created with a random secret if missing), with iss/aud from wrangler.toml [vars].

  --tenant <id>      the tenant (claim tid); required
  --scope "<list>"   space-separated scopes (claim scope); default "${DEFAULT_SCOPE}"
                     known: ${knownScopes().join(" ")}
  --tier <tier>      narrow the tenant's tier (claim tier): ${knownTiers().join(" | ")}
                     default: none, and the tenant's own tier applies; a token narrows a tier, never widens it
  --sub <subject>    the caller (claim sub); default "${DEFAULT_SUB}"
  --ttl <seconds>    lifetime: exp = iat + ttl; default ${DEFAULT_TTL_S}
  --env <name>       mint for a deployed environment instead: iss/aud from [env.<name>.vars], secret
                     from the JWT_HS256_SECRET environment variable (production refuses HS256 tokens)
  -h, --help         show this help
`;
}

function usageError(message) {
	return new ScriptError(`token: ${message}\nRun \`npm run token -- --help\` for usage.`, USAGE_EXIT);
}

/** Parses and validates the command line. Throws a ScriptError with exit code 2 on a bad one. */
export function parseTokenArgs(argv) {
	let parsed;
	try {
		parsed = parseArgs({
			args: argv,
			strict: true,
			allowPositionals: false,
			options: {
				tenant: { type: "string" },
				scope: { type: "string" },
				tier: { type: "string" },
				sub: { type: "string" },
				ttl: { type: "string" },
				env: { type: "string" },
				help: { type: "boolean", short: "h" },
			},
		});
	} catch (err) {
		throw usageError(err instanceof Error ? err.message : String(err));
	}
	const v = parsed.values;
	if (v.help) return { help: true };

	const tenant = v.tenant?.trim();
	if (!tenant) throw usageError("--tenant <id> is required");
	if (tenant.length > 128 || /\s/.test(tenant))
		throw usageError(`bad --tenant "${tenant}": up to 128 characters, no spaces`);

	const sub = (v.sub ?? DEFAULT_SUB).trim();
	if (!sub || sub.length > 256) throw usageError("--sub must be 1 to 256 characters");

	const tiers = knownTiers();
	if (v.tier !== undefined && !tiers.includes(v.tier)) {
		throw usageError(`unknown tier "${v.tier}"; known tiers: ${tiers.join(", ")}`);
	}

	const scopes = knownScopes();
	const requested = (v.scope ?? DEFAULT_SCOPE).split(/\s+/).filter(Boolean);
	if (requested.length === 0) throw usageError(`--scope needs at least one of: ${scopes.join(" ")}`);
	const unknown = requested.filter((s) => !scopes.includes(s));
	if (unknown.length > 0) {
		throw usageError(
			`unknown scope${unknown.length > 1 ? "s" : ""} ${unknown.map((s) => `"${s}"`).join(", ")}; known scopes: ${scopes.join(" ")}`,
		);
	}

	let ttl = DEFAULT_TTL_S;
	if (v.ttl !== undefined) {
		if (!/^\d+$/.test(v.ttl) || Number(v.ttl) < 1 || Number(v.ttl) > MAX_TTL_S) {
			throw usageError(`bad --ttl "${v.ttl}": a whole number of seconds from 1 to ${MAX_TTL_S}`);
		}
		ttl = Number(v.ttl);
	}

	if (v.env !== undefined) {
		let vars;
		try {
			vars = readWranglerVars(v.env);
		} catch (err) {
			throw usageError(err instanceof Error ? err.message : String(err));
		}
		if (vars.ENVIRONMENT === "production") {
			throw usageError(
				`--env ${v.env}: production refuses HS256 tokens; its tokens come from the identity provider at JWKS_URL`,
			);
		}
	}

	return { help: false, tenant, sub, tier: v.tier, scope: [...new Set(requested)].join(" "), ttl, env: v.env };
}

/**
 * The secret and iss/aud for an environment. Locally: .dev.vars (created if missing; the secret
 * `wrangler dev` loads), else the JWT_HS256_SECRET environment variable. For `--env <name>`: the
 * environment variable only.
 */
export function signingConfig(envName) {
	const { issuer, audience } = jwtVars(envName);
	let secret;
	let note;
	if (envName) {
		secret = process.env.JWT_HS256_SECRET;
		if (!secret) {
			throw new ScriptError(
				`token: --env ${envName} signs with the JWT_HS256_SECRET environment variable; set it to the secret you gave \`wrangler secret put JWT_HS256_SECRET --env ${envName}\``,
			);
		}
	} else {
		secret = readDevVars()?.JWT_HS256_SECRET;
		if (!secret && process.env.JWT_HS256_SECRET) secret = process.env.JWT_HS256_SECRET;
		if (!secret) {
			const ensured = ensureDevSecret();
			secret = ensured.secret;
			note = `${ensured.action === "created" ? "created .dev.vars" : "added JWT_HS256_SECRET to .dev.vars"} with a new random secret`;
		}
	}
	if (secret.length < MIN_SECRET_LENGTH) {
		throw new ScriptError(`token: JWT_HS256_SECRET must be at least ${MIN_SECRET_LENGTH} characters`);
	}
	return { secret, issuer, audience, note };
}

/**
 * Signs a token. Claims: iss, aud, sub, tid, scope (space-separated), tier (when given), iat, exp.
 * `now` is in seconds.
 */
export async function mintToken({ secret, issuer, audience, sub, tenant, tier, scope, ttl, now }) {
	const iat = now ?? Math.floor(Date.now() / 1000);
	const claims = { tid: tenant, scope };
	if (tier) claims.tier = tier;
	return new SignJWT(claims)
		.setProtectedHeader({ alg: "HS256", typ: "JWT" })
		.setIssuer(issuer)
		.setAudience(audience)
		.setSubject(sub)
		.setIssuedAt(iat)
		.setExpirationTime(iat + ttl)
		.sign(new TextEncoder().encode(secret));
}
