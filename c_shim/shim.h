/*
 * shim.h - the thinnest C layer over librdmacm + libibverbs for Bun and Deno FFI.
 *
 * Rules (docs/ARCHITECTURE.md lists the layers above):
 *  1. Only opaque handles cross the FFI boundary; no rdma-core struct does.
 *     The shim defines its own fixed-width records below, with _Static_assert
 *     on their sizes, and an ABI version the loader checks. ffi/records.ts
 *     names every field's offset once; test/verbs_records.test.ts compiles
 *     against this header and fails if the two layouts differ.
 *  2. Every function returns 0 (or a count) on success and -errno on failure.
 *     librdmacm sets errno and returns -1; verbs return a positive errno; both
 *     are converted here, at the boundary.
 *  3. Hot-path arguments are 32-bit. Remote addresses travel as two u32 halves.
 *  4. Connection-manager events are copied into a record and acknowledged here.
 *  5. Completions are polled into a C-owned ring of 32-byte records that JS
 *     reads through one typed-array view made once per connection.
 *  6. File descriptors (CM event channel, completion channel, epoll) are
 *     non-blocking; one blocking call exists, shim_waitset_wait, meant to run
 *     off the JS main thread (a Worker).
 *  7. Registered memory is allocated here, page aligned, and registered with
 *     exactly the access asked for.
 */
#ifndef RDMA_SHIM_H
#define RDMA_SHIM_H

#include <stdint.h>

#ifndef SHIM_ABI_VERSION /* overridable only so tests can build a mismatching shim */
#define SHIM_ABI_VERSION 2
#endif

/* Access flags for shim_mr_create (same bits as IBV_ACCESS_*, restated so JS need not know verbs.h). */
#define SHIM_ACCESS_LOCAL_WRITE  1u
#define SHIM_ACCESS_REMOTE_WRITE 2u
#define SHIM_ACCESS_REMOTE_READ  4u

/* Flags for the post calls. */
#define SHIM_SEND_SIGNALED 1u /* generate a completion */
#define SHIM_SEND_NO_INLINE 2u /* never inline, even when it fits */

/* Completion record: 32 bytes.
 *   0  u64 wr_id     the caller's token
 *   8  u32 status    enum ibv_wc_status (0 = success)
 *  12  u32 opcode    SHIM_OP_*
 *  16  u32 byte_len  bytes received (receives) or transferred
 *  20  u32 qp_num
 *  24  u32 imm       immediate data (host order), 0 when absent
 *  28  u32 vendor_err
 */
struct shim_wc {
  uint64_t wr_id;
  uint32_t status;
  uint32_t opcode;
  uint32_t byte_len;
  uint32_t qp_num;
  uint32_t imm;
  uint32_t vendor_err;
};
_Static_assert(sizeof(struct shim_wc) == 32, "shim_wc must be 32 bytes");

enum shim_opcode { SHIM_OP_SEND = 0, SHIM_OP_RDMA_WRITE = 1, SHIM_OP_RDMA_READ = 2, SHIM_OP_RECV = 128, SHIM_OP_OTHER = 255 };

/* Connection-manager event record: 256 bytes.
 *   0  u32 event        enum rdma_cm_event_type
 *   4  i32 status       the event's status (negative errno or a reject reason)
 *   8  u64 id           the cm id the event is for (for CONNECT_REQUEST: the new id)
 *  16  u64 listen_id    the listening id (CONNECT_REQUEST only), else 0
 *  24  u32 pdata_len    private data bytes copied
 *  28  u32 reserved
 *  32  u8  pdata[224]
 */
struct shim_cm_event {
  uint32_t event;
  int32_t status;
  uint64_t id;
  uint64_t listen_id;
  uint32_t pdata_len;
  uint32_t reserved;
  uint8_t pdata[224];
};
_Static_assert(sizeof(struct shim_cm_event) == 256, "shim_cm_event must be 256 bytes");

/* Port of a device: 16 bytes. state: enum ibv_port_state; mtus in bytes; link_layer: 1 IB, 2 Ethernet. */
struct shim_port_info {
  uint32_t state;
  uint32_t active_mtu;
  uint32_t max_mtu;
  uint32_t link_layer;
};

/* Device record: 256 bytes. max_inline_data is probed by creating a throwaway RC QP. */
struct shim_device_info {
  char name[64];
  uint64_t node_guid;
  uint64_t max_mr_size;
  uint32_t max_qp_wr;
  uint32_t max_sge;
  uint32_t max_cqe;
  uint32_t max_qp_rd_atom;
  uint32_t max_inline_data;
  uint32_t port_count; /* ports described below: min(phys_port_cnt, 4) */
  struct shim_port_info ports[4];
  uint8_t reserved[88];
};
_Static_assert(sizeof(struct shim_device_info) == 256, "shim_device_info must be 256 bytes");

/* Memory region record: 24 bytes. */
struct shim_mr_info {
  uint64_t addr;
  uint64_t length;
  uint32_t lkey;
  uint32_t rkey;
};
_Static_assert(sizeof(struct shim_mr_info) == 24, "shim_mr_info must be 24 bytes");

/* Connection record: 32 bytes. */
struct shim_conn_info {
  uint64_t ring_addr;     /* address of the completion ring (ring_capacity records) */
  uint32_t ring_capacity; /* records in the ring */
  uint32_t qp_num;
  uint32_t max_inline;    /* actual inline size granted */
  uint32_t send_depth;
  uint32_t recv_depth;
  int32_t cq_fd;          /* the completion channel's non-blocking fd */
};
_Static_assert(sizeof(struct shim_conn_info) == 32, "shim_conn_info must be 32 bytes");

struct shim_channel;
struct shim_conn;
struct shim_mr;
struct shim_waitset;
struct rdma_cm_id;

/* library */
int shim_abi_version(void);
int shim_record_sizes(uint32_t *out4); /* wc, cm_event, device_info, mr_info+conn_info<<16 */

/* devices */
int shim_device_count(void);
int shim_device_info(uint32_t index, struct shim_device_info *out);
/* ABI 2: whether device `index` registers a byte range of a registered buffer again, on its own, with
 * remote read (what per-transfer remote access needs): 0, or the -errno of the step that failed */
int shim_device_range_probe(uint32_t index);

/* connection manager */
int shim_channel_create(struct shim_channel **out);
int shim_channel_fd(struct shim_channel *ch);
int shim_channel_get_event(struct shim_channel *ch, struct shim_cm_event *out); /* -EAGAIN when none */
int shim_id_create(struct shim_channel *ch, struct rdma_cm_id **out);
int shim_id_bind_listen(struct rdma_cm_id *id, const char *host, uint32_t port, int32_t backlog);
int shim_id_resolve_addr(struct rdma_cm_id *id, const char *host, uint32_t port, uint32_t timeout_ms);
int shim_id_resolve_route(struct rdma_cm_id *id, uint32_t timeout_ms);
int shim_id_connect(struct rdma_cm_id *id, const uint8_t *pdata, uint32_t pdata_len);
int shim_id_accept(struct rdma_cm_id *id, const uint8_t *pdata, uint32_t pdata_len);
int shim_id_reject(struct rdma_cm_id *id, const uint8_t *pdata, uint32_t pdata_len);
int shim_id_disconnect(struct rdma_cm_id *id);
int shim_id_address(struct rdma_cm_id *id, uint32_t remote, char *buf, uint32_t len);
int shim_id_destroy(struct rdma_cm_id *id);

/* per connection: protection domain, completion channel + CQ, RC QP */
int shim_conn_create(struct rdma_cm_id *id, uint32_t send_depth, uint32_t recv_depth, uint32_t max_inline,
                     struct shim_conn **out);
int shim_conn_info(struct shim_conn *c, struct shim_conn_info *out);
/* destroys QP, CQ, channel and PD and frees c: every step is tried even when one fails; returns the first error */
int shim_conn_destroy(struct shim_conn *c);

/* memory regions: allocated page aligned here, registered on the connection's PD */
int shim_mr_create(struct shim_conn *c, uint32_t length, uint32_t access, struct shim_mr **out);
int shim_mr_info(struct shim_mr *mr, struct shim_mr_info *out);
/* deregisters, then frees; when ibv_dereg_mr fails nothing is freed (the device may still use the memory) */
int shim_mr_destroy(struct shim_mr *mr);
/* Registers exactly parent[off, off+len) again, on its own, with `access` (ABI 2): the key of the
 * new region opens those bytes and no others, until shim_mr_destroy on it (which frees nothing of
 * the parent's memory). Destroy it before the parent. */
int shim_mr_sub_create(struct shim_conn *c, struct shim_mr *parent, uint32_t off, uint32_t len, uint32_t access,
                       struct shim_mr **out);

/* hot path */
int shim_post_send(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t wr_id,
                   uint32_t flags);
int shim_post_recv(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t wr_id);
int shim_post_read(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t raddr_hi,
                   uint32_t raddr_lo, uint32_t rkey, uint32_t wr_id, uint32_t flags);
int shim_post_write(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t raddr_hi,
                    uint32_t raddr_lo, uint32_t rkey, uint32_t wr_id, uint32_t flags);
int shim_poll(struct shim_conn *c, uint32_t max); /* records written to the ring from index 0 */
int shim_arm(struct shim_conn *c);                 /* request a notification for the next completion */
int shim_ack_events(struct shim_conn *c);          /* consume pending channel events without blocking */

/* a wait set over many fds, so one off-main-thread waiter can sleep for all connections */
int shim_waitset_create(struct shim_waitset **out);
int shim_waitset_add(struct shim_waitset *ws, int32_t fd);
int shim_waitset_remove(struct shim_waitset *ws, int32_t fd);
int shim_waitset_wait(struct shim_waitset *ws, int32_t timeout_ms); /* blocking: fds ready, 0 timeout */
int shim_waitset_wake(struct shim_waitset *ws);                     /* makes a wait return now */

#endif
