// Copies Swagger UI's files from node_modules into public/docs/vendor/ so /docs works offline,
// served by Workers static assets. Runs after `npm install`.
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const from = join(root, "node_modules", "swagger-ui-dist");
const to = join(root, "public", "docs", "vendor");
if (!existsSync(from)) {
	console.warn("swagger-ui-dist is not installed; /docs will have no UI assets");
	process.exit(0);
}
mkdirSync(to, { recursive: true });
for (const file of ["swagger-ui-bundle.js", "swagger-ui.css"]) copyFileSync(join(from, file), join(to, file));
console.log(`docs assets copied to ${to}`);
