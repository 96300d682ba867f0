/**
 * The shim's fixed-size records (c_shim/shim.h): every byte offset named once,
 * beside the C struct it mirrors, and the readers the verbs layer uses.
 *
 * `LAYOUTS` is the source of truth on this side: the loader checks the sizes
 * against `shim_record_sizes`, and test/verbs_records.test.ts compiles a C
 * program that prints `sizeof`/`offsetof` for every field listed here and fails
 * on any difference, or on a field of the C struct not listed here (fields must
 * tile the struct: no gap, no overlap). Records are little-endian (the host's).
 *
 * It lives in ffi/ (not src/verbs/) because the loader needs the sizes and
 * ffi/ imports nothing from src/.
 *
 * @module
 */

/** One field: its byte offset and size in the C struct. */
export interface FieldLayout {
  readonly offset: number;
  readonly bytes: number;
}

/** A C struct: its name in shim.h, its size, and its fields (C names, in order). */
export interface RecordLayout {
  readonly struct: string;
  readonly size: number;
  readonly fields: Readonly<Record<string, FieldLayout>>;
}

const f = (offset: number, bytes: number): FieldLayout => ({ offset, bytes });

/*
 * struct shim_wc {            // completion record, 32 bytes, in the C-owned ring
 *   uint64_t wr_id; uint32_t status; uint32_t opcode; uint32_t byte_len;
 *   uint32_t qp_num; uint32_t imm; uint32_t vendor_err;
 * };
 */
const WC_LAYOUT = {
  struct: "shim_wc",
  size: 32,
  fields: {
    wr_id: f(0, 8),
    status: f(8, 4),
    opcode: f(12, 4),
    byte_len: f(16, 4),
    qp_num: f(20, 4),
    imm: f(24, 4),
    vendor_err: f(28, 4),
  },
} as const satisfies RecordLayout;

/*
 * struct shim_cm_event {      // 256 bytes
 *   uint32_t event; int32_t status; uint64_t id; uint64_t listen_id;
 *   uint32_t pdata_len; uint32_t reserved; uint8_t pdata[224];
 * };
 */
const CM_EVENT_LAYOUT = {
  struct: "shim_cm_event",
  size: 256,
  fields: {
    event: f(0, 4),
    status: f(4, 4),
    id: f(8, 8),
    listen_id: f(16, 8),
    pdata_len: f(24, 4),
    reserved: f(28, 4),
    pdata: f(32, 224),
  },
} as const satisfies RecordLayout;

/*
 * struct shim_port_info {     // 16 bytes, inside shim_device_info
 *   uint32_t state; uint32_t active_mtu; uint32_t max_mtu; uint32_t link_layer;
 * };
 */
const PORT_INFO_LAYOUT = {
  struct: "shim_port_info",
  size: 16,
  fields: {
    state: f(0, 4),
    active_mtu: f(4, 4),
    max_mtu: f(8, 4),
    link_layer: f(12, 4),
  },
} as const satisfies RecordLayout;

/*
 * struct shim_device_info {   // 256 bytes
 *   char name[64]; uint64_t node_guid; uint64_t max_mr_size;
 *   uint32_t max_qp_wr; uint32_t max_sge; uint32_t max_cqe; uint32_t max_qp_rd_atom;
 *   uint32_t max_inline_data; uint32_t port_count;
 *   struct shim_port_info ports[4]; uint8_t reserved[88];
 * };
 */
const DEVICE_INFO_LAYOUT = {
  struct: "shim_device_info",
  size: 256,
  fields: {
    name: f(0, 64),
    node_guid: f(64, 8),
    max_mr_size: f(72, 8),
    max_qp_wr: f(80, 4),
    max_sge: f(84, 4),
    max_cqe: f(88, 4),
    max_qp_rd_atom: f(92, 4),
    max_inline_data: f(96, 4),
    port_count: f(100, 4),
    ports: f(104, 4 * PORT_INFO_LAYOUT.size),
    reserved: f(168, 88),
  },
} as const satisfies RecordLayout;

/*
 * struct shim_mr_info {       // 24 bytes
 *   uint64_t addr; uint64_t length; uint32_t lkey; uint32_t rkey;
 * };
 */
const MR_INFO_LAYOUT = {
  struct: "shim_mr_info",
  size: 24,
  fields: {
    addr: f(0, 8),
    length: f(8, 8),
    lkey: f(16, 4),
    rkey: f(20, 4),
  },
} as const satisfies RecordLayout;

/*
 * struct shim_conn_info {     // 32 bytes
 *   uint64_t ring_addr; uint32_t ring_capacity; uint32_t qp_num; uint32_t max_inline;
 *   uint32_t send_depth; uint32_t recv_depth; int32_t cq_fd;
 * };
 */
const CONN_INFO_LAYOUT = {
  struct: "shim_conn_info",
  size: 32,
  fields: {
    ring_addr: f(0, 8),
    ring_capacity: f(8, 4),
    qp_num: f(12, 4),
    max_inline: f(16, 4),
    send_depth: f(20, 4),
    recv_depth: f(24, 4),
    cq_fd: f(28, 4),
  },
} as const satisfies RecordLayout;

/** Every record the shim shares with JS. */
export const LAYOUTS = {
  wc: WC_LAYOUT,
  cmEvent: CM_EVENT_LAYOUT,
  portInfo: PORT_INFO_LAYOUT,
  deviceInfo: DEVICE_INFO_LAYOUT,
  mrInfo: MR_INFO_LAYOUT,
  connInfo: CONN_INFO_LAYOUT,
} as const satisfies Record<string, RecordLayout>;

/** Record sizes the loader checks against `shim_record_sizes`. */
export const RECORD_SIZES = {
  wc: WC_LAYOUT.size,
  cmEvent: CM_EVENT_LAYOUT.size,
  deviceInfo: DEVICE_INFO_LAYOUT.size,
  mrInfo: MR_INFO_LAYOUT.size,
  connInfo: CONN_INFO_LAYOUT.size,
} as const;

/** Maximum ports a device record describes (`ports[4]`). */
const DEVICE_MAX_PORTS = DEVICE_INFO_LAYOUT.fields.ports.bytes / PORT_INFO_LAYOUT.size;

// ---- readers -----------------------------------------------------------------

const WC = WC_LAYOUT.fields;
const WC_SIZE = WC_LAYOUT.size;

/**
 * The completion ring (`shim_conn_info.ring_addr`, `ring_capacity` records of
 * `struct shim_wc`), read in place: one DataView made when the connection is,
 * no allocation per record or field.
 */
export class CompletionRing {
  readonly #v: DataView;
  readonly capacity: number;

  constructor(ring: ArrayBuffer, capacity: number) {
    if (ring.byteLength < capacity * WC_SIZE) {
      throw new RangeError(`completion ring of ${ring.byteLength} bytes cannot hold ${capacity} records of ${WC_SIZE}`);
    }
    this.#v = new DataView(ring, 0, capacity * WC_SIZE);
    this.capacity = capacity;
  }

  /** The low 32 bits of `wr_id` of record `i` (the shim's tokens are 32-bit). */
  token(i: number): number {
    return this.#v.getUint32(i * WC_SIZE + WC.wr_id.offset, true);
  }
  status(i: number): number {
    return this.#v.getUint32(i * WC_SIZE + WC.status.offset, true);
  }
  opcode(i: number): number {
    return this.#v.getUint32(i * WC_SIZE + WC.opcode.offset, true);
  }
  byteLength(i: number): number {
    return this.#v.getUint32(i * WC_SIZE + WC.byte_len.offset, true);
  }
  qpNum(i: number): number {
    return this.#v.getUint32(i * WC_SIZE + WC.qp_num.offset, true);
  }
  imm(i: number): number {
    return this.#v.getUint32(i * WC_SIZE + WC.imm.offset, true);
  }
  vendorErr(i: number): number {
    return this.#v.getUint32(i * WC_SIZE + WC.vendor_err.offset, true);
  }
}

const CME = CM_EVENT_LAYOUT.fields;

/** A CM event as decoded from `struct shim_cm_event`. */
export interface CmEventRecord {
  type: number;
  status: number;
  id: bigint;
  listenId: bigint;
  /** A copy: the record buffer is reused for the next event. */
  privateData: Uint8Array;
}

/**
 * A reusable buffer for `shim_channel_get_event`: the record and its view are
 * made once; `read()` makes only the event object and its private-data copy.
 */
export class CmEventBuffer {
  readonly bytes = new Uint8Array(CM_EVENT_LAYOUT.size);
  readonly #v = new DataView(this.bytes.buffer);

  read(): CmEventRecord {
    const v = this.#v;
    const len = Math.min(v.getUint32(CME.pdata_len.offset, true), CME.pdata.bytes);
    return {
      type: v.getUint32(CME.event.offset, true),
      status: v.getInt32(CME.status.offset, true),
      id: v.getBigUint64(CME.id.offset, true),
      listenId: v.getBigUint64(CME.listen_id.offset, true),
      privateData: this.bytes.slice(CME.pdata.offset, CME.pdata.offset + len),
    };
  }
}

const view = (rec: Uint8Array) => new DataView(rec.buffer, rec.byteOffset, rec.byteLength);

function check(rec: Uint8Array, layout: RecordLayout): DataView {
  if (rec.byteLength < layout.size) {
    throw new RangeError(`struct ${layout.struct} needs ${layout.size} bytes: got ${rec.byteLength}`);
  }
  return view(rec);
}

/** `struct shim_mr_info`. */
export interface MrInfoRecord {
  address: bigint;
  length: bigint;
  lkey: number;
  rkey: number;
}

const MR = MR_INFO_LAYOUT.fields;
export function readMrInfo(rec: Uint8Array): MrInfoRecord {
  const v = check(rec, MR_INFO_LAYOUT);
  return {
    address: v.getBigUint64(MR.addr.offset, true),
    length: v.getBigUint64(MR.length.offset, true),
    lkey: v.getUint32(MR.lkey.offset, true),
    rkey: v.getUint32(MR.rkey.offset, true),
  };
}

/** `struct shim_conn_info`. */
export interface ConnInfoRecord {
  ringAddress: bigint;
  ringCapacity: number;
  qpNum: number;
  maxInline: number;
  sendDepth: number;
  recvDepth: number;
  cqFd: number;
}

const CI = CONN_INFO_LAYOUT.fields;
export function readConnInfo(rec: Uint8Array): ConnInfoRecord {
  const v = check(rec, CONN_INFO_LAYOUT);
  return {
    ringAddress: v.getBigUint64(CI.ring_addr.offset, true),
    ringCapacity: v.getUint32(CI.ring_capacity.offset, true),
    qpNum: v.getUint32(CI.qp_num.offset, true),
    maxInline: v.getUint32(CI.max_inline.offset, true),
    sendDepth: v.getUint32(CI.send_depth.offset, true),
    recvDepth: v.getUint32(CI.recv_depth.offset, true),
    cqFd: v.getInt32(CI.cq_fd.offset, true),
  };
}

/** `struct shim_port_info`: state is enum ibv_port_state; link_layer 1 IB, 2 Ethernet. */
export interface PortInfoRecord {
  state: number;
  activeMtu: number;
  maxMtu: number;
  linkLayer: number;
}

/** `struct shim_device_info`, with the `port_count` described ports. */
export interface DeviceInfoRecord {
  /** The bytes of `name` (NUL-terminated within them). */
  name: Uint8Array;
  nodeGuid: bigint;
  maxMrSize: bigint;
  maxQpWr: number;
  maxSge: number;
  maxCqe: number;
  maxQpRdAtom: number;
  maxInlineData: number;
  ports: PortInfoRecord[];
}

const DI = DEVICE_INFO_LAYOUT.fields;
const PI = PORT_INFO_LAYOUT.fields;
export function readDeviceInfo(rec: Uint8Array): DeviceInfoRecord {
  const v = check(rec, DEVICE_INFO_LAYOUT);
  const u32 = (off: number) => v.getUint32(off, true);
  const ports: PortInfoRecord[] = [];
  const count = Math.min(u32(DI.port_count.offset), DEVICE_MAX_PORTS);
  for (let p = 0; p < count; p++) {
    const base = DI.ports.offset + p * PORT_INFO_LAYOUT.size;
    ports.push({
      state: u32(base + PI.state.offset),
      activeMtu: u32(base + PI.active_mtu.offset),
      maxMtu: u32(base + PI.max_mtu.offset),
      linkLayer: u32(base + PI.link_layer.offset),
    });
  }
  return {
    name: rec.subarray(DI.name.offset, DI.name.offset + DI.name.bytes),
    nodeGuid: v.getBigUint64(DI.node_guid.offset, true),
    maxMrSize: v.getBigUint64(DI.max_mr_size.offset, true),
    maxQpWr: u32(DI.max_qp_wr.offset),
    maxSge: u32(DI.max_sge.offset),
    maxCqe: u32(DI.max_cqe.offset),
    maxQpRdAtom: u32(DI.max_qp_rd_atom.offset),
    maxInlineData: u32(DI.max_inline_data.offset),
    ports,
  };
}
