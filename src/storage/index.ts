export { seal, unseal } from "./secret-box";
