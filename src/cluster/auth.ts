/**
 * Peer authentication: a mutual challenge-response with a shared cluster
 * secret, run as the first messages on every replication socket, before any
 * RMI frame is read.
 *
 * Steps (D = the dialing peer, A = the accepting peer):
 * 1. D → A  HELLO{role D, nonce_D, id_D}
 * 2. A checks id_D is a configured peer, then A → D  HELLO{role A, nonce_A, id_A}
 * 3. D → A  PROOF{HMAC(secret, transcript("dialer"))}
 * 4. A verifies it (constant time); on failure A closes the socket.
 *    A → D  PROOF{HMAC(secret, transcript("acceptor"))}
 * 5. D verifies it; on failure D closes the socket.
 * transcript(role) = "rdma-sessions/auth/v1 " role ‖ 0 ‖ nonce_D ‖ nonce_A ‖ id_D ‖ 0 ‖ id_A.
 * Fresh nonces on both sides defeat replay; the role label defeats reflection.
 *
 * Session keys: after both proofs check, each side derives one key per
 * direction with HKDF-SHA256 (RFC 5869): IKM = secret, salt = nonce_D ‖ nonce_A,
 * info = "rdma-sessions/seal/v1 " direction ‖ 0 ‖ id_D ‖ 0 ‖ id_A, 32 bytes,
 * direction "dialer->acceptor" or "acceptor->dialer". They are fresh per
 * connection (both nonces), bound to both ids, never sent, and differ from
 * the proofs (which are sent in the clear). `sealed_socket.ts` uses them to
 * MAC and number every frame after the handshake.
 *
 * Layout (big-endian):
 * ```
 * HELLO  0 "RSA1" magic (4) | 4 u8 type=1 | 5 u8 role (0 dialer, 1 acceptor) | 6 u16 idLen (1..64)
 *        8 nonce (32) | 40 id (idLen, UTF-8)            total 40 + idLen
 * PROOF  0 "RSA1" | 4 u8 type=2 | 5 u8 0 | 6 u16 0 | 8 mac (32)   total 40
 * ```
 *
 * @module
 */

import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import type { MessageSocket, ReceivedMessage } from "../sdp/types.ts";
import { isValidPeerId } from "./peers.ts";

/** Authentication failed; the socket has been closed. */
export class AuthError extends Error {
  override name = "AuthError";
}

/** Keys derived from one handshake, one per direction (32 bytes each), as seen from this side. */
export interface SessionKeys {
  /** MACs the frames this side sends. */
  readonly send: Uint8Array;
  /** Checks the frames this side receives. */
  readonly receive: Uint8Array;
}

/** What a successful handshake yields. */
export interface AuthResult {
  /** The authenticated peer id. */
  readonly peer: string;
  /** This connection's keys (for `SealedSocket`). */
  readonly keys: SessionKeys;
}

/** Options of one handshake. */
export interface AuthOptions {
  role: "dialer" | "acceptor";
  /** Our peer id. */
  self: string;
  /** The cluster secret (at least 16 bytes). */
  secret: string | Uint8Array;
  /** Peer ids allowed to connect (acceptor) or expected (dialer: exactly one). */
  allowed: (peerId: string) => boolean;
  /** Give up after this long. @default 5000 */
  timeoutMs?: number;
}

const MAGIC = [0x52, 0x53, 0x41, 0x31]; // "RSA1"
const HELLO = 1;
const PROOF = 2;
const NONCE_BYTES = 32;
const HEADER = 8;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Checks a cluster secret; throws `RangeError` if it is too short. */
export function secretBytes(secret: string | Uint8Array): Uint8Array {
  const bytes = typeof secret === "string" ? encoder.encode(secret) : secret;
  if (bytes.byteLength < 16) {
    throw new RangeError(`cluster 'secret' must be at least 16 bytes: got ${bytes.byteLength}`);
  }
  return bytes;
}

/**
 * Runs the handshake on `socket`, reading from `messages` (the socket's single
 * iterator, which the caller then hands to the RMI endpoint). Resolves with
 * the authenticated peer id; on any failure closes the socket and rejects
 * with `AuthError`. The frames after it are not protected: use
 * `authenticateWithKeys` and a `SealedSocket` for that.
 */
export async function authenticate(
  socket: MessageSocket,
  messages: AsyncIterator<ReceivedMessage>,
  options: AuthOptions,
): Promise<string> {
  return (await authenticateWithKeys(socket, messages, options)).peer;
}

/**
 * `authenticate`, also returning this connection's session keys (see the
 * module notes), for wrapping the socket in a `SealedSocket`.
 */
export async function authenticateWithKeys(
  socket: MessageSocket,
  messages: AsyncIterator<ReceivedMessage>,
  options: AuthOptions,
): Promise<AuthResult> {
  const secret = secretBytes(options.secret);
  const timeoutMs = options.timeoutMs ?? 5000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new AuthError(`authentication with ${socket.remoteAddress} timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([run(socket, messages, options, secret), timeout]);
  } catch (error) {
    await socket.close().catch(() => {});
    if (error instanceof AuthError) throw error;
    throw new AuthError(`authentication with ${socket.remoteAddress} failed: ${messageOf(error)}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

async function run(
  socket: MessageSocket,
  messages: AsyncIterator<ReceivedMessage>,
  options: AuthOptions,
  secret: Uint8Array,
): Promise<AuthResult> {
  const ourNonce = new Uint8Array(randomBytes(NONCE_BYTES));
  const dialer = options.role === "dialer";
  if (dialer) await socket.send(encodeHello(0, ourNonce, options.self));
  const hello = decodeHello(await next(messages, "HELLO"), dialer ? 1 : 0);
  if (!options.allowed(hello.id)) throw new AuthError(`peer '${hello.id}' is not a member of this cluster`);
  if (!dialer) await socket.send(encodeHello(1, ourNonce, options.self));
  const [nonceD, nonceA] = dialer ? [ourNonce, hello.nonce] : [hello.nonce, ourNonce];
  const [idD, idA] = dialer ? [options.self, hello.id] : [hello.id, options.self];
  const macD = mac(secret, "dialer", nonceD, nonceA, idD, idA);
  const macA = mac(secret, "acceptor", nonceD, nonceA, idD, idA);
  if (dialer) {
    await socket.send(encodeProof(macD));
    const proof = decodeProof(await next(messages, "PROOF"));
    if (!timingSafeEqual(proof, macA)) throw new AuthError(`peer '${hello.id}' failed the challenge: wrong cluster secret`);
  } else {
    const proof = decodeProof(await next(messages, "PROOF"));
    if (!timingSafeEqual(proof, macD)) throw new AuthError(`peer '${hello.id}' failed the challenge: wrong cluster secret`);
    await socket.send(encodeProof(macA));
  }
  const d2a = deriveKey(secret, "dialer->acceptor", nonceD, nonceA, idD, idA);
  const a2d = deriveKey(secret, "acceptor->dialer", nonceD, nonceA, idD, idA);
  return { peer: hello.id, keys: dialer ? { send: d2a, receive: a2d } : { send: a2d, receive: d2a } };
}

/** HKDF-SHA256 of the secret for one direction of one connection (module notes). */
export function deriveKey(
  secret: Uint8Array,
  direction: "dialer->acceptor" | "acceptor->dialer",
  nonceD: Uint8Array,
  nonceA: Uint8Array,
  idD: string,
  idA: string,
): Uint8Array {
  const salt = new Uint8Array(nonceD.byteLength + nonceA.byteLength);
  salt.set(nonceD, 0);
  salt.set(nonceA, nonceD.byteLength);
  const info = encoder.encode(`rdma-sessions/seal/v1 ${direction}\u0000${idD}\u0000${idA}`);
  return new Uint8Array(hkdfSync("sha256", secret, salt, info, 32));
}

async function next(messages: AsyncIterator<ReceivedMessage>, what: string): Promise<Uint8Array> {
  const result = await messages.next();
  if (result.done) throw new AuthError(`connection closed while waiting for auth ${what}`);
  const bytes = result.value.copy();
  result.value.release();
  return bytes;
}

function mac(secret: Uint8Array, role: string, nonceD: Uint8Array, nonceA: Uint8Array, idD: string, idA: string) {
  const h = createHmac("sha256", secret);
  h.update(encoder.encode(`rdma-sessions/auth/v1 ${role}\u0000`));
  h.update(nonceD);
  h.update(nonceA);
  h.update(encoder.encode(`${idD}\u0000${idA}`));
  return new Uint8Array(h.digest());
}

function encodeHello(role: number, nonce: Uint8Array, id: string): Uint8Array {
  const idBytes = encoder.encode(id);
  const frame = new Uint8Array(HEADER + NONCE_BYTES + idBytes.byteLength);
  frame.set(MAGIC, 0);
  frame[4] = HELLO;
  frame[5] = role;
  new DataView(frame.buffer).setUint16(6, idBytes.byteLength);
  frame.set(nonce, HEADER);
  frame.set(idBytes, HEADER + NONCE_BYTES);
  return frame;
}

function encodeProof(digest: Uint8Array): Uint8Array {
  const frame = new Uint8Array(HEADER + digest.byteLength);
  frame.set(MAGIC, 0);
  frame[4] = PROOF;
  frame.set(digest, HEADER);
  return frame;
}

function checkHeader(bytes: Uint8Array, type: number, what: string): void {
  if (bytes.byteLength < HEADER) throw new AuthError(`auth ${what} must be at least ${HEADER} bytes: got ${bytes.byteLength}`);
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== MAGIC[i]) throw new AuthError(`auth ${what} must start with "RSA1": the peer is not speaking this protocol`);
  }
  if (bytes[4] !== type) throw new AuthError(`auth message type must be ${type} (${what}): got ${bytes[4]}`);
}

function decodeHello(bytes: Uint8Array, expectRole: number): { nonce: Uint8Array; id: string } {
  checkHeader(bytes, HELLO, "HELLO");
  if (bytes[5] !== expectRole) throw new AuthError(`auth HELLO role must be ${expectRole}: got ${bytes[5]}`);
  const idLen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint16(6);
  if (idLen < 1 || idLen > 64 || bytes.byteLength !== HEADER + NONCE_BYTES + idLen) {
    throw new AuthError(`auth HELLO must be ${HEADER + NONCE_BYTES} + idLen (1..64) bytes: got ${bytes.byteLength} with idLen ${idLen}`);
  }
  let id: string;
  try {
    id = decoder.decode(bytes.subarray(HEADER + NONCE_BYTES));
  } catch {
    throw new AuthError("auth HELLO peer id is not valid UTF-8");
  }
  if (!isValidPeerId(id)) throw new AuthError(`auth HELLO peer id is not a valid peer id: '${id}'`);
  return { nonce: bytes.slice(HEADER, HEADER + NONCE_BYTES), id };
}

function decodeProof(bytes: Uint8Array): Uint8Array {
  checkHeader(bytes, PROOF, "PROOF");
  if (bytes.byteLength !== HEADER + 32) throw new AuthError(`auth PROOF must be ${HEADER + 32} bytes: got ${bytes.byteLength}`);
  return bytes.subarray(HEADER);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
