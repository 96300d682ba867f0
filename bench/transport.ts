/**
 * Client side of the transport benchmarks: latency (one message at a time)
 * and throughput (a window of messages in flight) over our SDP socket, and
 * the same over a plain node:net echo for reference. The peers are in
 * `peer.ts`, in another process.
 *
 * Latency of one message, two figures:
 * - `sendReturnUs`: from `send()` to its promise resolving: the *return*
 *   (bytes in the peer's memory: RC send completion for bcopy, RdmaRdCompl
 *   for zcopy, the transport acknowledgement on TCP). This is what a
 *   replicated update waits for in ack mode `transport`.
 * - `halfRttUs`: half the round trip through an echo (the ping-pong that
 *   `ib_send_lat` reports).
 *
 * @module
 */
import * as net from "node:net";
import { connect } from "../src/sdp/mod.ts";
import type { MessageSocket, ReceivedMessage, TransportKind } from "../src/sdp/types.ts";
import { round, summarize } from "./lib.ts";
import { FrameReader } from "./peer.ts";

export interface LatencyPoint {
  size: number;
  mode: string;
  /** Samples measured (after the warm-up). */
  n: number;
  /** Round trips run before measuring (not counted). */
  warmup?: number;
  sendReturnUs?: number;
  sendReturnP90Us?: number;
  sendReturnP99Us?: number;
  halfRttUs: number;
  halfRttP90Us?: number;
  halfRttP99Us: number;
  halfRttMinUs?: number;
  halfRttMaxUs?: number;
  /** Wall time of the measured samples, s. */
  seconds?: number;
}

export interface ThroughputPoint {
  size: number;
  mode: string;
  messages: number;
  window: number;
  MBps: number;
  seconds: number;
}

/** A pattern message of `size` bytes (content is irrelevant, but not all zero). */
export function message(size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) b[i] = i & 0xff;
  return b;
}

export interface SdpClientOptions {
  transport: TransportKind;
  host: string;
  port: number;
  zcopyThreshold: number;
  maxMessageSize: number;
}

export function sdpConnect(o: SdpClientOptions): Promise<MessageSocket> {
  return connect({ transport: o.transport, host: o.host, port: o.port, zcopyThreshold: o.zcopyThreshold, maxMessageSize: o.maxMessageSize, timeoutMs: 60_000, handshakeTimeoutMs: 60_000 });
}

/**
 * One round trip of `msg` through an echo peer: how long `send` took to return
 * and half the time until the echo came back, both in µs. Throws if the peer
 * closed the socket or echoed another size.
 */
async function roundTrip(s: MessageSocket, it: AsyncIterator<ReceivedMessage>, msg: Uint8Array): Promise<[number, number]> {
  const t0 = performance.now();
  const echoed = it.next();
  await s.send(msg);
  const t1 = performance.now();
  const r = await echoed;
  const t2 = performance.now();
  if (r.done) throw new Error("echo peer closed the socket");
  const m = r.value;
  if (m.bytes.length !== msg.byteLength) throw new Error(`echo of ${msg.byteLength} bytes came back with ${m.bytes.length}`);
  m.release();
  return [(t1 - t0) * 1000, (t2 - t0) * 500];
}

/** Ping-pong through an echo peer, `n` times after `warmup`. */
export async function sdpLatency(s: MessageSocket, size: number, n: number, mode: string, warmup = 3): Promise<LatencyPoint> {
  const it = s[Symbol.asyncIterator]();
  const msg = message(size);
  const ret: number[] = [], rtt: number[] = [];
  for (let i = 0; i < warmup + n; i++) {
    const [sendReturnUs, halfRttUs] = await roundTrip(s, it, msg);
    if (i >= warmup) {
      ret.push(sendReturnUs);
      rtt.push(halfRttUs);
    }
  }
  const a = summarize(ret), b = summarize(rtt);
  return { size, mode, n, warmup, sendReturnUs: a.p50, sendReturnP99Us: a.p99, halfRttUs: b.p50, halfRttP99Us: b.p99 };
}

/** Nearest-rank percentile of sorted numbers, rounded. */
function pct(sorted: number[], p: number): number {
  return round(sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]);
}

/**
 * Ping-pong through an echo peer with a warm-up and a sample count chosen by
 * time: warm-up until `warmup.max` round trips or `warmup.ms` have passed (at
 * least `warmup.min`), then `samples` round trips, fewer only when the
 * warm-up's pace says that `samples` would take longer than `budgetMs` (never
 * fewer than `minSamples`). The point records how many of each were run.
 */
export async function sdpLatencyTimed(
  s: MessageSocket,
  size: number,
  mode: string,
  o: { samples: number; minSamples: number; budgetMs: number; warmup: { min: number; max: number; ms: number } },
): Promise<LatencyPoint> {
  const it = s[Symbol.asyncIterator]();
  const msg = message(size);
  const once = () => roundTrip(s, it, msg);
  const w0 = performance.now();
  let warm = 0;
  while (warm < o.warmup.max && (warm < o.warmup.min || performance.now() - w0 < o.warmup.ms)) {
    await once();
    warm++;
  }
  // The pace of the whole warm-up (ms per round trip): slower than steady state, so the count errs low.
  const pace = (performance.now() - w0) / Math.max(1, warm);
  const n = Math.max(o.minSamples, Math.min(o.samples, Math.floor(o.budgetMs / Math.max(pace, 1e-3))));
  const ret: number[] = new Array(n), rtt: number[] = new Array(n);
  const m0 = performance.now();
  for (let i = 0; i < n; i++) [ret[i], rtt[i]] = await once();
  const seconds = round((performance.now() - m0) / 1000);
  ret.sort((a, b) => a - b);
  rtt.sort((a, b) => a - b);
  return {
    size,
    mode,
    n,
    warmup: warm,
    sendReturnUs: pct(ret, 50),
    sendReturnP90Us: pct(ret, 90),
    sendReturnP99Us: pct(ret, 99),
    halfRttUs: pct(rtt, 50),
    halfRttP90Us: pct(rtt, 90),
    halfRttP99Us: pct(rtt, 99),
    halfRttMinUs: round(rtt[0]),
    halfRttMaxUs: round(rtt[n - 1]),
    seconds,
  };
}

/**
 * `count` messages with at most `window` in flight. `echo` true: a message
 * is done when its echo is back (TCP, compared with a plain echo); false: when
 * its `send` returns (a sink peer; compared with ib_read_bw).
 */
export async function sdpThroughput(s: MessageSocket, size: number, count: number, window: number, mode: string, echo: boolean): Promise<ThroughputPoint> {
  const msg = message(size);
  const it = echo ? s[Symbol.asyncIterator]() : undefined;
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    let sent = 0, done = 0, inflight = 0;
    const finish = () => {
      inflight--;
      if (++done === count) resolve();
      else pump();
    };
    const pump = () => {
      while (inflight < window && sent < count) {
        inflight++;
        sent++;
        const p = s.send(msg);
        if (!echo) p.then(finish, reject);
        else {
          p.catch(reject);
          it!.next().then((r) => {
            if (r.done) return reject(new Error("echo peer closed the socket"));
            (r.value as ReceivedMessage).release();
            finish();
          }, reject);
        }
      }
    };
    pump();
  });
  const seconds = (performance.now() - t0) / 1000;
  return { size, mode, messages: count, window, MBps: round((size * count) / seconds / 1e6), seconds: round(seconds) };
}

/** A plain node:net connection speaking `[u32 length][payload]` frames. */
export class PlainClient {
  readonly #sock: net.Socket;
  #waiters: ((f: Uint8Array) => void)[] = [];
  private constructor(sock: net.Socket) {
    this.#sock = sock;
    const reader = new FrameReader((f) => this.#waiters.shift()?.(f));
    sock.on("data", (d: Uint8Array) => reader.push(d));
  }
  static connect(host: string, port: number): Promise<PlainClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host, port }, () => {
        sock.setNoDelay(true);
        resolve(new PlainClient(sock));
      });
      sock.once("error", reject);
    });
  }
  /** A frame ready to write (length prefix + payload). */
  static frame(size: number): Uint8Array {
    const f = new Uint8Array(4 + size);
    new DataView(f.buffer).setUint32(0, size, true);
    f.set(message(size), 4);
    return f;
  }
  /** Writes a frame; resolves with the next frame that comes back. */
  roundTrip(frame: Uint8Array): Promise<Uint8Array> {
    const p = new Promise<Uint8Array>((r) => this.#waiters.push(r));
    this.#sock.write(frame);
    return p;
  }
  close(): void {
    this.#sock.destroy();
  }
}

export async function plainLatency(c: PlainClient, size: number, n: number, warmup = 3): Promise<LatencyPoint> {
  const frame = PlainClient.frame(size);
  const rtt: number[] = [];
  for (let i = 0; i < warmup + n; i++) {
    const t0 = performance.now();
    const back = await c.roundTrip(frame);
    if (back.length !== frame.length) throw new Error(`plain echo of ${size} bytes came back with ${back.length - 4}`);
    if (i >= warmup) rtt.push((performance.now() - t0) * 500);
  }
  const b = summarize(rtt);
  return { size, mode: "plain", n, halfRttUs: b.p50, halfRttP99Us: b.p99 };
}

export async function plainThroughput(c: PlainClient, size: number, count: number, window: number): Promise<ThroughputPoint> {
  const frame = PlainClient.frame(size);
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let sent = 0, done = 0, inflight = 0;
    const pump = () => {
      while (inflight < window && sent < count) {
        inflight++;
        sent++;
        c.roundTrip(frame).then(() => {
          inflight--;
          if (++done === count) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  const seconds = (performance.now() - t0) / 1000;
  return { size, mode: "plain", messages: count, window, MBps: round((size * count) / seconds / 1e6), seconds: round(seconds) };
}
