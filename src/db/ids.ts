/** Row ids: a prefix naming the kind of row and random lowercase letters and digits. */
const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

/** `prefix_` followed by `length` random characters from [a-z0-9] (e.g. `newId("key", 16)`). */
export function newId(prefix: string, length: number): string {
	let id = `${prefix}_`;
	for (const b of crypto.getRandomValues(new Uint8Array(length))) id += ALPHABET[b % ALPHABET.length];
	return id;
}
