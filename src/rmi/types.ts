/**
 * Shared types of the one-way RMI layer.
 *
 * @module
 */

/**
 * When a call's promise resolves:
 * - `none`: at once; send failures are only counted and logged.
 * - `transport`: on the socket's return, i.e. the bytes are in the callee's
 *   memory (the patent's one-way RMI). The default.
 * - `applied`: when the callee's method has run and its REPLY has arrived
 *   (a synchronous acknowledgement); resolves with the method's result.
 */
export type AckMode = "none" | "transport" | "applied";

/** Where diagnostics go. Only `warn` is used: for things counted and otherwise dropped. */
export interface RmiLogger {
  warn(message: string): void;
}

/** Counters of one endpoint; all monotonic. */
export interface RmiStats {
  callsSent: number;
  callsReceived: number;
  repliesReceived: number;
  /** Calls naming a method the table does not have. */
  unknownMethods: number;
  /** Calls whose arguments failed to decode or whose method threw. */
  failedCalls: number;
  /** Frames that broke the layout; each closed the connection. */
  malformedFrames: number;
  /** Sends in `none` mode that failed (nobody was waiting). */
  droppedSends: number;
}

/** All-zero counters: a new endpoint's, and the start of a sum over endpoints. */
export function emptyRmiStats(): RmiStats {
  return {
    callsSent: 0,
    callsReceived: 0,
    repliesReceived: 0,
    unknownMethods: 0,
    failedCalls: 0,
    malformedFrames: 0,
    droppedSends: 0,
  };
}
