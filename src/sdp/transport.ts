/**
 * Transport choice, `connect` and `listen`: picks a link module (rdma, tcp,
 * loopback), opens the link and runs the SDP handshake over it.
 *
 * @module
 */
import type { HandshakeLimits } from "../accept_queue.ts";
import type { Link, LinkListener, LinkSizes, LinkTransportModule, PreAuthSizes } from "./links/link.ts";
import type { TlsConfig } from "./links/tls.ts";
import { type SocketOptions, SdpSocket } from "./socket.ts";
import type { MessageListener, MessageSocket, TransportChoice, TransportKind } from "./types.ts";

/** Options shared by `connect` and `listen`. */
export interface TransportOptions extends SocketOptions, LinkSizes {
  /** Which transport; `auto` picks rdma when a device port is ACTIVE, else tcp. @default "auto" */
  transport?: TransportChoice;
  /** One line about decisions taken (which transport `auto` picked, accept failures). @default no logging */
  log?: (line: string) => void;
  /**
   * TLS with mutual certificate checks, for the tcp transport (see
   * `src/sdp/links/tls.ts`); ignored by rdma and loopback. @default plain tcp
   */
  tls?: TlsConfig;
  /**
   * Start every connection with the small footprint before trust, for peers
   * that are authenticated over the socket itself (the cluster sets it on its
   * listener and dialer): `PreAuthSizes` receive buffers and send slots
   * (default 8 + 8), no zcopy arenas, and `maxMessageSize` 65536 for what the
   * socket receives and sends, until `socket.trust()`. `true` takes the
   * defaults. Off by default: a plain sdp user gets the full sizes at once.
   * @default false
   */
  preAuth?: PreAuthSizes | boolean;
  /*
   * Inherited, documented in their interfaces:
   * zcopyThreshold (@default 262144), cancelTimeoutMs (@default 10000),
   * handshakeTimeoutMs (@default 10000), closeTimeoutMs (@default 2000),
   * recvBufferSize (@default 65536), recvBufferCount (@default 64),
   * sendSlots (@default 64), maxMessageSize (@default 16777216).
   */
}

/** Options of `connect`. */
export interface ConnectOptions extends TransportOptions {
  /** Peer address (for rdma: an address of the peer's RDMA interface). */
  host: string;
  port: number;
  /** Connection establishment timeout (the SDP handshake has its own, `handshakeTimeoutMs`). @default 5000 */
  timeoutMs?: number;
}

/**
 * Options of `listen`. Accept limits bound what peers that have not
 * authenticated can hold (README, "Limits before trust"):
 */
export interface ListenOptions extends TransportOptions, HandshakeLimits {
  /** Local address to bind. @default "127.0.0.1" */
  host?: string;
  /** 0 picks a free port (see `listener.address`). @default 0 */
  port?: number;
  /**
   * rdma: connection requests in the rdma_cm handshake at once (each has its
   * link's buffers registered); a request beyond it is rejected at once.
   * Other transports have no such stage. @default 8
   */
  maxHandshakes?: number;
  /**
   * How long one connection may take for its handshake: the rdma_cm exchange
   * (rdma) and, separately, the SDP HELLO exchange (every transport).
   * @default 10000
   */
  handshakeTimeoutMs?: number;
  /**
   * Links in the SDP HELLO exchange at once, on every transport (accepted,
   * buffers allocated, no HELLO yet); a link beyond it is closed at once
   * (logged through `log`). @default 64
   */
  maxSdpHandshakes?: number;
}

/** Defaults of the accept limits of `ListenOptions` (`maxHandshakes` and `handshakeTimeoutMs`: `HANDSHAKE_DEFAULTS`). */
export const LISTEN_DEFAULTS = { maxHandshakes: 8, handshakeTimeoutMs: 10000, maxSdpHandshakes: 64 } as const;

/** Resolves `auto`: rdma when a device has an ACTIVE port, else tcp. Never throws. */
export async function chooseTransport(
  choice: TransportChoice = "auto",
  log?: (line: string) => void,
): Promise<TransportKind> {
  if (choice !== "auto") return choice;
  try {
    const verbs = await import("../verbs/mod.ts");
    const devs = await verbs.devices();
    const active = devs.find((d) => d.ports.some((p) => p.state === "active"));
    if (active) {
      log?.(`transport auto: rdma (device ${active.name} has an ACTIVE port)`);
      return "rdma";
    }
    log?.(`transport auto: tcp (no RDMA device with an ACTIVE port among ${devs.length} device(s))`);
  } catch (e) {
    log?.(`transport auto: tcp (RDMA unavailable: ${(e as Error).message})`);
  }
  return "tcp";
}

/** Loads the link module of a transport; rdma and tcp only when asked for. */
export async function linkModule(kind: TransportKind): Promise<LinkTransportModule> {
  switch (kind) {
    case "loopback":
      return await import("./links/loopback.ts");
    case "tcp":
      return await import("./links/tcp.ts");
    case "rdma": {
      // Loaded only here, so tcp and loopback users never load the verbs
      // module or the native shim.
      try {
        return await import("./links/rdma.ts");
      } catch (e) {
        throw new Error(`the rdma transport is not available: ${(e as Error).message}`, { cause: e });
      }
    }
  }
}

/** Connects to a listening peer and completes the SDP handshake. */
export async function connect(options: ConnectOptions): Promise<SdpSocket> {
  const kind = await chooseTransport(options.transport, options.log);
  const mod = await linkModule(kind);
  const link = await mod.connectLink(options);
  return await SdpSocket.open(link, "active", options);
}

class Listener implements MessageListener {
  readonly transport: TransportKind;
  readonly address: { host: string; port: number };
  readonly #links: LinkListener;
  readonly #options: ListenOptions;
  #queue: SdpSocket[] = [];
  #waiters: Array<(r: IteratorResult<SdpSocket>) => void> = [];
  #closed = false;
  readonly #handshaking = new Set<Link>();

  constructor(kind: TransportKind, links: LinkListener, options: ListenOptions) {
    this.transport = kind;
    this.#links = links;
    this.address = links.address;
    this.#options = options;
    this.#acceptLoop();
  }

  async #acceptLoop(): Promise<void> {
    const max = this.#options.maxSdpHandshakes ?? LISTEN_DEFAULTS.maxSdpHandshakes;
    for await (const link of this.#links) {
      if (this.#closed) {
        link.close();
        continue;
      }
      if (this.#handshaking.size >= max) {
        this.#options.log?.(`listen: connection from ${link.remoteAddress} refused: ${max} SDP handshakes already in progress (maxSdpHandshakes)`);
        link.close(new Error(`refused: ${max} SDP handshakes already in progress (maxSdpHandshakes)`));
        continue;
      }
      this.#handshaking.add(link);
      SdpSocket.open(link, "passive", this.#options).then(
        (s) => {
          this.#handshaking.delete(link);
          if (this.#closed) return void s.close();
          const w = this.#waiters.shift();
          if (w) w({ value: s, done: false });
          else this.#queue.push(s);
        },
        (e: Error) => {
          this.#handshaking.delete(link);
          this.#options.log?.(`listen: connection from ${link.remoteAddress} dropped: ${e.message}`);
        },
      );
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true });
    for (const l of this.#handshaking) l.close();
    await Promise.all(this.#queue.splice(0).map((s) => s.close()));
    await this.#links.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<MessageSocket> {
    return {
      next: () => {
        const s = this.#queue.shift();
        if (s) return Promise.resolve({ value: s, done: false });
        if (this.#closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((r) => this.#waiters.push(r));
      },
    };
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Listens for peers; yields each connected socket once its handshake is done. */
export async function listen(options: ListenOptions = {}): Promise<MessageListener> {
  const m = options.maxSdpHandshakes;
  if (m !== undefined && (!Number.isInteger(m) || m < 1 || m > 65535)) {
    throw new RangeError(`'maxSdpHandshakes' must be an integer in 1..65535: got ${m}`);
  }
  const kind = await chooseTransport(options.transport, options.log);
  const mod = await linkModule(kind);
  const links = await mod.listenLinks({ ...options, host: options.host ?? "127.0.0.1", port: options.port ?? 0 });
  return new Listener(kind, links, options);
}
