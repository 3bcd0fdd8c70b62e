// `npm run token -- --tenant <id> [--scope "…"] [--tier …] [--sub …] [--ttl …] [--env …]`:
// prints a development HS256 JWT for the gateway. `npm run token -- --help` for the details.
import { ScriptError } from "./lib/project.mjs";
import { mintToken, parseTokenArgs, signingConfig, usage } from "./lib/token.mjs";

try {
	const args = parseTokenArgs(process.argv.slice(2));
	if (args.help) {
		process.stdout.write(usage());
	} else {
		const { secret, issuer, audience, note } = signingConfig(args.env);
		if (note) console.error(`token: ${note}`);
		console.log(await mintToken({ ...args, secret, issuer, audience }));
	}
} catch (err) {
	if (err instanceof ScriptError) {
		console.error(err.message);
		process.exitCode = err.exitCode;
	} else {
		throw err;
	}
}
