/*
 * shim.c - see shim.h for the rules. Each setup function is a ladder of
 * acquisitions; errors jump to labels that release in reverse order.
 */
#define _GNU_SOURCE
#include "shim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#define RING_CAPACITY 64u
#define RD_ATOMIC_MAX 16

struct shim_channel {
  struct rdma_event_channel *ch;
};

struct shim_conn {
  struct rdma_cm_id *id;
  struct ibv_pd *pd;
  struct ibv_comp_channel *comp;
  struct ibv_cq *cq;
  uint32_t max_inline;
  uint32_t send_depth;
  uint32_t recv_depth;
  uint32_t unacked_events;
  struct shim_wc ring[RING_CAPACITY];
};

struct shim_mr {
  struct ibv_mr *mr;
  void *buf;
  uint32_t length;
  uint32_t borrowed; /* buf belongs to a parent region (shim_mr_sub_create): never freed here */
};

struct shim_waitset {
  int epfd;
  int wakefd;
};

/* errno from librdmacm (-1 + errno) or from verbs (positive errno) into -errno. */
static int neg_errno(void) { return errno ? -errno : -EIO; }
static int neg_verbs(int rc) { return rc > 0 ? -rc : (rc < 0 ? neg_errno() : 0); }

static int set_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return neg_errno();
  return 0;
}

/* ---- library ------------------------------------------------------------ */

int shim_abi_version(void) { return SHIM_ABI_VERSION; }

int shim_record_sizes(uint32_t *out4) {
  out4[0] = sizeof(struct shim_wc);
  out4[1] = sizeof(struct shim_cm_event);
  out4[2] = sizeof(struct shim_device_info);
  out4[3] = (uint32_t)sizeof(struct shim_mr_info) | ((uint32_t)sizeof(struct shim_conn_info) << 16);
  return 0;
}

/* ---- devices ------------------------------------------------------------ */

int shim_device_count(void) {
  int n = 0;
  struct ibv_device **list = ibv_get_device_list(&n);
  if (!list) return (errno == ENOSYS || errno == ENODEV || errno == ENOENT) ? 0 : neg_errno();
  ibv_free_device_list(list);
  return n;
}

/* Largest inline size an RC QP accepts on this device: rdma-core has no attribute for it. */
static uint32_t probe_max_inline(struct ibv_context *ctx, struct ibv_pd *pd) {
  static const uint32_t tries[] = {1024, 512, 256, 128, 64, 32, 0};
  struct ibv_cq *cq = ibv_create_cq(ctx, 4, NULL, NULL, 0);
  uint32_t best = 0;
  if (!cq) return 0;
  for (unsigned i = 0; i < sizeof tries / sizeof tries[0]; i++) {
    struct ibv_qp_init_attr a = {.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC,
                                 .cap = {.max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1,
                                         .max_recv_sge = 1, .max_inline_data = tries[i]}};
    struct ibv_qp *qp = ibv_create_qp(pd, &a);
    if (qp) {
      best = a.cap.max_inline_data;
      ibv_destroy_qp(qp);
      break;
    }
  }
  ibv_destroy_cq(cq);
  return best;
}

int shim_device_info(uint32_t index, struct shim_device_info *out) {
  int n = 0, rc = 0;
  struct ibv_device **list = ibv_get_device_list(&n);
  struct ibv_context *ctx = NULL;
  struct ibv_pd *pd = NULL;
  struct ibv_device_attr attr;
  memset(out, 0, sizeof *out);
  if (!list) return neg_errno();
  if (index >= (uint32_t)n) { rc = -ENODEV; goto out_list; }
  ctx = ibv_open_device(list[index]);
  if (!ctx) { rc = neg_errno(); goto out_list; }
  if ((rc = neg_verbs(ibv_query_device(ctx, &attr)))) goto out_ctx;
  snprintf(out->name, sizeof out->name, "%s", ibv_get_device_name(list[index]));
  out->node_guid = be64toh(attr.node_guid);
  out->max_mr_size = attr.max_mr_size;
  out->max_qp_wr = (uint32_t)attr.max_qp_wr;
  out->max_sge = (uint32_t)attr.max_sge;
  out->max_cqe = (uint32_t)attr.max_cqe;
  out->max_qp_rd_atom = (uint32_t)attr.max_qp_rd_atom;
  out->port_count = attr.phys_port_cnt > 4 ? 4 : attr.phys_port_cnt;
  for (uint32_t p = 0; p < out->port_count; p++) {
    struct ibv_port_attr pa;
    if (ibv_query_port(ctx, (uint8_t)(p + 1), &pa)) continue;
    out->ports[p].state = pa.state;
    out->ports[p].active_mtu = 128u << pa.active_mtu;
    out->ports[p].max_mtu = 128u << pa.max_mtu;
    out->ports[p].link_layer = pa.link_layer;
  }
  pd = ibv_alloc_pd(ctx);
  if (pd) {
    out->max_inline_data = probe_max_inline(ctx, pd);
    ibv_dealloc_pd(pd);
  }
out_ctx:
  ibv_close_device(ctx);
out_list:
  ibv_free_device_list(list);
  return rc;
}

int shim_device_range_probe(uint32_t index) {
  int n = 0, rc = 0;
  long page = sysconf(_SC_PAGESIZE);
  struct ibv_device **list = ibv_get_device_list(&n);
  struct ibv_context *ctx = NULL;
  struct ibv_pd *pd = NULL;
  struct ibv_mr *whole = NULL, *part = NULL;
  void *buf = NULL;
  if (!list) return neg_errno();
  if (index >= (uint32_t)n) { rc = -ENODEV; goto out_list; }
  if (!(ctx = ibv_open_device(list[index]))) { rc = neg_errno(); goto out_list; }
  if (!(pd = ibv_alloc_pd(ctx))) { rc = neg_errno(); goto out_ctx; }
  if ((rc = -posix_memalign(&buf, (size_t)page, 2 * (size_t)page))) goto out_pd;
  if (!(whole = ibv_reg_mr(pd, buf, 2 * (size_t)page, 0))) { rc = neg_errno(); goto out_buf; }
  if (!(part = ibv_reg_mr(pd, (uint8_t *)buf + 7, (size_t)page, IBV_ACCESS_REMOTE_READ))) { rc = neg_errno(); goto out_whole; }
  rc = neg_verbs(ibv_dereg_mr(part));
out_whole:
  ibv_dereg_mr(whole);
out_buf:
  free(buf);
out_pd:
  ibv_dealloc_pd(pd);
out_ctx:
  ibv_close_device(ctx);
out_list:
  ibv_free_device_list(list);
  return rc;
}

/* ---- connection manager ------------------------------------------------- */

int shim_channel_create(struct shim_channel **out) {
  int rc;
  struct shim_channel *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->ch = rdma_create_event_channel();
  if (!c->ch) { rc = neg_errno(); goto err_free; }
  if ((rc = set_nonblocking(c->ch->fd))) goto err_ch;
  *out = c;
  return 0;
err_ch:
  rdma_destroy_event_channel(c->ch);
err_free:
  free(c);
  return rc;
}

int shim_channel_fd(struct shim_channel *ch) { return ch->ch->fd; }

int shim_channel_get_event(struct shim_channel *ch, struct shim_cm_event *out) {
  struct rdma_cm_event *ev;
  if (rdma_get_cm_event(ch->ch, &ev)) return neg_errno();
  memset(out, 0, sizeof *out);
  out->event = ev->event;
  out->status = ev->status;
  out->id = (uint64_t)(uintptr_t)ev->id;
  out->listen_id = (uint64_t)(uintptr_t)ev->listen_id;
  if (ev->id->ps == RDMA_PS_TCP && ev->param.conn.private_data && ev->param.conn.private_data_len) {
    uint32_t n = ev->param.conn.private_data_len;
    if (n > sizeof out->pdata) n = sizeof out->pdata;
    memcpy(out->pdata, ev->param.conn.private_data, n);
    out->pdata_len = n;
  }
  rdma_ack_cm_event(ev);
  return 0;
}

int shim_id_create(struct shim_channel *ch, struct rdma_cm_id **out) {
  if (rdma_create_id(ch->ch, out, NULL, RDMA_PS_TCP)) return neg_errno();
  return 0;
}

static int lookup(const char *host, uint32_t port, int passive, struct addrinfo **res) {
  char service[16];
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
  snprintf(service, sizeof service, "%u", port);
  int rc = getaddrinfo(host && host[0] ? host : NULL, service, &hints, res);
  if (rc == EAI_SYSTEM) return neg_errno();
  return rc ? -EADDRNOTAVAIL : 0;
}

int shim_id_bind_listen(struct rdma_cm_id *id, const char *host, uint32_t port, int32_t backlog) {
  struct addrinfo *res;
  int rc = lookup(host, port, 1, &res);
  if (rc) return rc;
  rc = rdma_bind_addr(id, res->ai_addr) ? neg_errno() : 0;
  freeaddrinfo(res);
  if (rc) return rc;
  return rdma_listen(id, backlog) ? neg_errno() : 0;
}

int shim_id_resolve_addr(struct rdma_cm_id *id, const char *host, uint32_t port, uint32_t timeout_ms) {
  struct addrinfo *res;
  int rc = lookup(host, port, 0, &res);
  if (rc) return rc;
  rc = rdma_resolve_addr(id, NULL, res->ai_addr, (int)timeout_ms) ? neg_errno() : 0;
  freeaddrinfo(res);
  return rc;
}

int shim_id_resolve_route(struct rdma_cm_id *id, uint32_t timeout_ms) {
  return rdma_resolve_route(id, (int)timeout_ms) ? neg_errno() : 0;
}

static void conn_param(struct rdma_cm_id *id, struct rdma_conn_param *p, const uint8_t *pdata, uint32_t len) {
  struct ibv_device_attr attr;
  int rd = RD_ATOMIC_MAX;
  memset(p, 0, sizeof *p);
  if (id->verbs && !ibv_query_device(id->verbs, &attr)) {
    if (attr.max_qp_rd_atom < rd) rd = attr.max_qp_rd_atom;
    if (attr.max_qp_init_rd_atom < rd) rd = attr.max_qp_init_rd_atom;
  }
  p->private_data = pdata;
  p->private_data_len = (uint8_t)(len > 255 ? 255 : len);
  p->responder_resources = (uint8_t)rd; /* RDMA READs the peer may have outstanding against us */
  p->initiator_depth = (uint8_t)rd;     /* RDMA READs we may have outstanding */
  p->retry_count = 7;
  p->rnr_retry_count = 7; /* 7 = retry forever on receiver-not-ready */
}

int shim_id_connect(struct rdma_cm_id *id, const uint8_t *pdata, uint32_t pdata_len) {
  struct rdma_conn_param p;
  if (pdata_len > 56) return -EMSGSIZE;
  conn_param(id, &p, pdata, pdata_len);
  return rdma_connect(id, &p) ? neg_errno() : 0;
}

int shim_id_accept(struct rdma_cm_id *id, const uint8_t *pdata, uint32_t pdata_len) {
  struct rdma_conn_param p;
  if (pdata_len > 196) return -EMSGSIZE;
  conn_param(id, &p, pdata, pdata_len);
  return rdma_accept(id, &p) ? neg_errno() : 0;
}

int shim_id_reject(struct rdma_cm_id *id, const uint8_t *pdata, uint32_t pdata_len) {
  if (pdata_len > 148) return -EMSGSIZE;
  return rdma_reject(id, pdata_len ? pdata : NULL, (uint8_t)pdata_len) ? neg_errno() : 0;
}

int shim_id_disconnect(struct rdma_cm_id *id) { return rdma_disconnect(id) ? neg_errno() : 0; }

int shim_id_address(struct rdma_cm_id *id, uint32_t remote, char *buf, uint32_t len) {
  struct sockaddr *sa = remote ? rdma_get_peer_addr(id) : rdma_get_local_addr(id);
  char host[64] = "?";
  uint32_t port = ntohs(remote ? rdma_get_dst_port(id) : rdma_get_src_port(id));
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
  snprintf(buf, len, "%s:%u", host, port);
  return (int)port;
}

int shim_id_destroy(struct rdma_cm_id *id) { return rdma_destroy_id(id) ? neg_errno() : 0; }

/* ---- per-connection resources -------------------------------------------- */

int shim_conn_create(struct rdma_cm_id *id, uint32_t send_depth, uint32_t recv_depth, uint32_t max_inline,
                     struct shim_conn **out) {
  int rc;
  struct shim_conn *c;
  if (!id->verbs) return -ENODEV; /* address not resolved / no request yet */
  c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->id = id;
  c->pd = ibv_alloc_pd(id->verbs);
  if (!c->pd) { rc = neg_errno(); goto err_free; }
  c->comp = ibv_create_comp_channel(id->verbs);
  if (!c->comp) { rc = neg_errno(); goto err_pd; }
  if ((rc = set_nonblocking(c->comp->fd))) goto err_comp;
  c->cq = ibv_create_cq(id->verbs, (int)(send_depth + recv_depth), c, c->comp, 0);
  if (!c->cq) { rc = neg_errno(); goto err_comp; }
  struct ibv_qp_init_attr qa = {.send_cq = c->cq, .recv_cq = c->cq, .qp_type = IBV_QPT_RC, .sq_sig_all = 0,
                                .cap = {.max_send_wr = send_depth, .max_recv_wr = recv_depth,
                                        .max_send_sge = 1, .max_recv_sge = 1, .max_inline_data = max_inline}};
  if (rdma_create_qp(id, c->pd, &qa)) { rc = neg_errno(); goto err_cq; }
  c->max_inline = qa.cap.max_inline_data;
  c->send_depth = qa.cap.max_send_wr;
  c->recv_depth = qa.cap.max_recv_wr;
  *out = c;
  return 0;
err_cq:
  ibv_destroy_cq(c->cq);
err_comp:
  ibv_destroy_comp_channel(c->comp);
err_pd:
  ibv_dealloc_pd(c->pd);
err_free:
  free(c);
  return rc;
}

int shim_conn_info(struct shim_conn *c, struct shim_conn_info *out) {
  out->ring_addr = (uint64_t)(uintptr_t)c->ring;
  out->ring_capacity = RING_CAPACITY;
  out->qp_num = c->id->qp ? c->id->qp->qp_num : 0;
  out->max_inline = c->max_inline;
  out->send_depth = c->send_depth;
  out->recv_depth = c->recv_depth;
  out->cq_fd = c->comp->fd;
  return 0;
}

/* Releases in reverse order. Memory regions must be destroyed first (the PD is busy otherwise). */
/* Releases everything even when a step fails (a region still registered keeps the PD busy,
 * say): every later step is still tried, the struct is always freed, and the first error is
 * returned. What the kernel refused to destroy is gone from our reach either way. */
int shim_conn_destroy(struct shim_conn *c) {
  int rc = 0, r;
  if (c->id->qp) rdma_destroy_qp(c->id);
  shim_ack_events(c);
  if (c->unacked_events) ibv_ack_cq_events(c->cq, c->unacked_events);
  c->unacked_events = 0;
  if ((r = neg_verbs(ibv_destroy_cq(c->cq))) && !rc) rc = r;
  if ((r = neg_verbs(ibv_destroy_comp_channel(c->comp))) && !rc) rc = r;
  if ((r = neg_verbs(ibv_dealloc_pd(c->pd))) && !rc) rc = r;
  free(c);
  return rc;
}

/* ---- memory regions ------------------------------------------------------ */

static int access_flags(uint32_t access) {
  int flags = 0;
  if (access & ~(SHIM_ACCESS_LOCAL_WRITE | SHIM_ACCESS_REMOTE_WRITE | SHIM_ACCESS_REMOTE_READ)) return -EINVAL;
  if (access & SHIM_ACCESS_LOCAL_WRITE) flags |= IBV_ACCESS_LOCAL_WRITE;
  if (access & SHIM_ACCESS_REMOTE_WRITE) flags |= IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE;
  if (access & SHIM_ACCESS_REMOTE_READ) flags |= IBV_ACCESS_REMOTE_READ;
  return flags;
}

int shim_mr_create(struct shim_conn *c, uint32_t length, uint32_t access, struct shim_mr **out) {
  int rc, flags = access_flags(access);
  long page = sysconf(_SC_PAGESIZE);
  struct shim_mr *m;
  if (length == 0 || flags < 0) return -EINVAL;
  m = calloc(1, sizeof *m);
  if (!m) return -ENOMEM;
  size_t rounded = ((size_t)length + (size_t)page - 1) / (size_t)page * (size_t)page;
  if ((rc = posix_memalign(&m->buf, (size_t)page, rounded))) { rc = -rc; goto err_free; }
  memset(m->buf, 0, rounded);
  m->length = length;
  m->mr = ibv_reg_mr(c->pd, m->buf, length, flags);
  if (!m->mr) { rc = neg_errno(); goto err_buf; }
  *out = m;
  return 0;
err_buf:
  free(m->buf);
err_free:
  free(m);
  return rc;
}

int shim_mr_sub_create(struct shim_conn *c, struct shim_mr *parent, uint32_t off, uint32_t len, uint32_t access,
                       struct shim_mr **out) {
  int rc, flags = access_flags(access);
  struct shim_mr *m;
  if (len == 0 || flags < 0) return -EINVAL;
  if ((uint64_t)off + len > parent->length) return -ERANGE;
  m = calloc(1, sizeof *m);
  if (!m) return -ENOMEM;
  m->buf = (uint8_t *)parent->buf + off;
  m->length = len;
  m->borrowed = 1;
  m->mr = ibv_reg_mr(c->pd, m->buf, len, flags);
  if (!m->mr) {
    rc = neg_errno();
    free(m);
    return rc;
  }
  *out = m;
  return 0;
}

int shim_mr_info(struct shim_mr *m, struct shim_mr_info *out) {
  out->addr = (uint64_t)(uintptr_t)m->buf;
  out->length = m->length;
  out->lkey = m->mr->lkey;
  out->rkey = m->mr->rkey;
  return 0;
}

int shim_mr_destroy(struct shim_mr *m) {
  int rc = neg_verbs(ibv_dereg_mr(m->mr));
  if (rc) return rc;
  if (!m->borrowed) free(m->buf);
  free(m);
  return 0;
}

/* ---- hot path ------------------------------------------------------------ */

static int check_range(struct shim_mr *mr, uint32_t off, uint32_t len) {
  return ((uint64_t)off + len > mr->length) ? -ERANGE : 0;
}

static int post_one(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t wr_id,
                    uint32_t flags, enum ibv_wr_opcode op, uint64_t raddr, uint32_t rkey) {
  struct ibv_sge sge = {.addr = (uint64_t)(uintptr_t)mr->buf + off, .length = len, .lkey = mr->mr->lkey};
  struct ibv_send_wr wr = {.wr_id = wr_id, .sg_list = &sge, .num_sge = 1, .opcode = op}, *bad;
  int rc = check_range(mr, off, len);
  if (rc) return rc;
  if (flags & SHIM_SEND_SIGNALED) wr.send_flags |= IBV_SEND_SIGNALED;
  if (op != IBV_WR_RDMA_READ && !(flags & SHIM_SEND_NO_INLINE) && len <= c->max_inline)
    wr.send_flags |= IBV_SEND_INLINE;
  wr.wr.rdma.remote_addr = raddr;
  wr.wr.rdma.rkey = rkey;
  return neg_verbs(ibv_post_send(c->id->qp, &wr, &bad));
}

int shim_post_send(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t wr_id,
                   uint32_t flags) {
  return post_one(c, mr, off, len, wr_id, flags, IBV_WR_SEND, 0, 0);
}

int shim_post_read(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t raddr_hi,
                   uint32_t raddr_lo, uint32_t rkey, uint32_t wr_id, uint32_t flags) {
  return post_one(c, mr, off, len, wr_id, flags, IBV_WR_RDMA_READ, ((uint64_t)raddr_hi << 32) | raddr_lo, rkey);
}

int shim_post_write(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t raddr_hi,
                    uint32_t raddr_lo, uint32_t rkey, uint32_t wr_id, uint32_t flags) {
  return post_one(c, mr, off, len, wr_id, flags, IBV_WR_RDMA_WRITE, ((uint64_t)raddr_hi << 32) | raddr_lo, rkey);
}

int shim_post_recv(struct shim_conn *c, struct shim_mr *mr, uint32_t off, uint32_t len, uint32_t wr_id) {
  struct ibv_sge sge = {.addr = (uint64_t)(uintptr_t)mr->buf + off, .length = len, .lkey = mr->mr->lkey};
  struct ibv_recv_wr wr = {.wr_id = wr_id, .sg_list = &sge, .num_sge = 1}, *bad;
  int rc = check_range(mr, off, len);
  if (rc) return rc;
  return neg_verbs(ibv_post_recv(c->id->qp, &wr, &bad));
}

static uint32_t map_opcode(enum ibv_wc_opcode op) {
  switch (op) {
  case IBV_WC_SEND: return SHIM_OP_SEND;
  case IBV_WC_RDMA_WRITE: return SHIM_OP_RDMA_WRITE;
  case IBV_WC_RDMA_READ: return SHIM_OP_RDMA_READ;
  case IBV_WC_RECV: return SHIM_OP_RECV;
  default: return SHIM_OP_OTHER;
  }
}

int shim_poll(struct shim_conn *c, uint32_t max) {
  struct ibv_wc wc[RING_CAPACITY];
  if (max > RING_CAPACITY) max = RING_CAPACITY;
  int n = ibv_poll_cq(c->cq, (int)max, wc);
  if (n < 0) return -EIO;
  for (int i = 0; i < n; i++) {
    struct shim_wc *r = &c->ring[i];
    r->wr_id = wc[i].wr_id;
    r->status = wc[i].status;
    /* the opcode is undefined for failed completions; report what the token says instead */
    r->opcode = wc[i].status == IBV_WC_SUCCESS ? map_opcode(wc[i].opcode) : SHIM_OP_OTHER;
    r->byte_len = wc[i].byte_len;
    r->qp_num = wc[i].qp_num;
    r->imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? ntohl(wc[i].imm_data) : 0;
    r->vendor_err = wc[i].vendor_err;
  }
  return n;
}

int shim_arm(struct shim_conn *c) { return neg_verbs(ibv_req_notify_cq(c->cq, 0)); }

int shim_ack_events(struct shim_conn *c) {
  struct ibv_cq *cq;
  void *ctx;
  int n = 0;
  while (ibv_get_cq_event(c->comp, &cq, &ctx) == 0) n++;
  c->unacked_events += (uint32_t)n;
  if (c->unacked_events) {
    ibv_ack_cq_events(c->cq, c->unacked_events);
    c->unacked_events = 0;
  }
  return n;
}

/* ---- wait set ------------------------------------------------------------ */

int shim_waitset_create(struct shim_waitset **out) {
  int rc;
  struct shim_waitset *ws = calloc(1, sizeof *ws);
  if (!ws) return -ENOMEM;
  ws->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (ws->epfd < 0) { rc = neg_errno(); goto err_free; }
  ws->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ws->wakefd < 0) { rc = neg_errno(); goto err_ep; }
  if ((rc = shim_waitset_add(ws, ws->wakefd))) goto err_wake;
  *out = ws;
  return 0;
err_wake:
  close(ws->wakefd);
err_ep:
  close(ws->epfd);
err_free:
  free(ws);
  return rc;
}

int shim_waitset_add(struct shim_waitset *ws, int32_t fd) {
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  return epoll_ctl(ws->epfd, EPOLL_CTL_ADD, fd, &ev) ? neg_errno() : 0;
}

int shim_waitset_remove(struct shim_waitset *ws, int32_t fd) {
  return epoll_ctl(ws->epfd, EPOLL_CTL_DEL, fd, NULL) ? neg_errno() : 0;
}

int shim_waitset_wait(struct shim_waitset *ws, int32_t timeout_ms) {
  struct epoll_event evs[32];
  int n = epoll_wait(ws->epfd, evs, 32, timeout_ms);
  if (n < 0) return errno == EINTR ? 0 : neg_errno();
  for (int i = 0; i < n; i++) {
    if (evs[i].data.fd == ws->wakefd) {
      uint64_t v;
      if (read(ws->wakefd, &v, sizeof v) < 0) { /* already drained */ }
    }
  }
  return n;
}

int shim_waitset_wake(struct shim_waitset *ws) {
  uint64_t one = 1;
  return write(ws->wakefd, &one, sizeof one) < 0 ? neg_errno() : 0;
}
