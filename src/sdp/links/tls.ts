/**
 * TLS for the tcp transport, with the runtime's own TLS (`node:tls`, which
 * Bun and Deno both provide): mutual authentication with certificates signed
 * by a CA the cluster names. Every peer presents its certificate and checks
 * the other's; the cluster secret still authenticates peers on top (a
 * certificate proves the host, the secret proves cluster membership).
 *
 * What it protects: confidentiality and integrity of everything on the wire
 * (session contents, handshakes) against a passive or active attacker on the
 * network. Over rdma it does not apply: there the integrity of frames after
 * the handshake comes from the cluster layer, and confidentiality from the
 * network the RDMA fabric runs on.
 *
 * @module
 */

import { readFileSync } from "node:fs";

/** TLS settings of the tcp transport: PEM contents, or files to read them from. */
export interface TlsConfig {
  /** This server's certificate chain (PEM), or `certFile`. */
  cert?: string | Uint8Array;
  certFile?: string;
  /** Its private key (PEM), or `keyFile`. */
  key?: string | Uint8Array;
  keyFile?: string;
  /** The CA that signs every peer's certificate (PEM), or `caFile`. Peers without a certificate it signed are refused. */
  ca?: string | Uint8Array;
  caFile?: string;
  /** Name checked against the server's certificate when dialing. @default the host dialed */
  servername?: string;
}

/** PEM material of a `TlsConfig`, files read; throws naming the missing or unreadable part. */
export interface TlsMaterial {
  cert: string | Uint8Array;
  key: string | Uint8Array;
  ca: string | Uint8Array;
  servername?: string;
}

/** Reads a `TlsConfig` into PEM material. */
export function tlsMaterial(config: TlsConfig): TlsMaterial {
  const part = (name: "cert" | "key" | "ca"): string | Uint8Array => {
    const inline = config[name];
    if (inline !== undefined) return inline;
    const file = config[`${name}File`];
    if (file === undefined) throw new TypeError(`tls '${name}' (or '${name}File') is required`);
    try {
      return readFileSync(file);
    } catch (error) {
      throw new Error(`tls '${name}File' ${file} cannot be read: ${(error as Error).message}`, { cause: error });
    }
  };
  return { cert: part("cert"), key: part("key"), ca: part("ca"), servername: config.servername };
}
