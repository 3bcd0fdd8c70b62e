// The Worker's bundle resolves `import … from "zod"` here (wrangler.toml [alias]) instead of zod's own entry.
//
// Why: @hono/zod-openapi passes zod's `z` namespace to extendZodWithOpenApi as a value, so with zod's entry the
// bundler must keep every name in it: 64 locales (260 KiB minified), `compile`, `fromJSONSchema`, and the schema
// kinds the gateway never builds (dates, bigints, maps, sets, files, functions, codecs, …). This entry's `z` holds
// only the names the Worker uses — each one zod's own value, taken from zod's own modules — and the bundle drops
// the rest: 834 KiB → 483 KiB raw, 214 → 150 KiB gzip (issue 11). English messages stay (classic/schemas.js
// registers them). Types still come from zod itself: only the bundler reads this file.
//
// `npm run check` runs scripts/check-zod-bundle.mjs: every `z.<name>` in src/, durable-objects/ and workers/ and
// every name @hono/zod-openapi and zod-to-openapi read from `z` must be here, and each must be the very value
// zod's entry exports. A name used and not listed fails the check, not the Worker.
import * as z from "./zod.js";

export * as coerce from "../../node_modules/zod/v4/classic/coerce.js";
export { ZodError } from "../../node_modules/zod/v4/classic/errors.js";
export * as iso from "../../node_modules/zod/v4/classic/iso.js";
export {
	array,
	boolean,
	custom,
	discriminatedUnion,
	enum,
	literal,
	looseObject,
	number,
	object,
	record,
	strictObject,
	string,
	union,
	unknown,
	url,
	ZodType,
} from "../../node_modules/zod/v4/classic/schemas.js";
export { NEVER } from "../../node_modules/zod/v4/core/index.js";
export { z, z as default };
