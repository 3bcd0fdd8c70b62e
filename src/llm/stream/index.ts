/** The streamed chat answer: started upstream until its first chunk, then guarded chunk by chunk to the client. */
export { type StreamOptions, streamAnswer } from "./answer";
export { startStream, type Upstream } from "./upstream";
