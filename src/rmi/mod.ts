/**
 * One-way RMI over a message socket: call frames, ack modes and endpoints.
 *
 * @module
 */
export { jsonCodec, type ValueCodec } from "./codec.ts";
export { RemoteError, RmiClosedError, RmiTimeoutError } from "./errors.ts";
export {
  type CallContext,
  type CallOptions,
  type MethodTable,
  RmiEndpoint,
  type RmiEndpointOptions,
  type RmiMethod,
} from "./endpoint.ts";
export { decodeFrame, encodeCall, encodeReply, RmiFrameError } from "./frame.ts";
export type { AckMode, RmiLogger, RmiStats } from "./types.ts";
