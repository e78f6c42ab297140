// Batched UDP sends for the tunnel's direct path and UDP services.
//
// Node's dgram sends one datagram per system call, and in a tunnel that call
// (plus the kernel's per-packet work behind it) is most of the CPU per
// datagram (docs/BENCHMARKS.md "Batched UDP sends"). This addon sends many
// datagrams to one destination in one sendmmsg(2), and runs of equal-sized
// datagrams as one UDP GSO super-packet (UDP_SEGMENT, Linux 4.18+), which
// crosses the stack once and is cut into datagrams at the last moment.
//
// It writes to the fd of a socket libuv owns. That is safe because UDP sends
// are atomic per datagram and the fd is non-blocking; the JS side only calls
// here when libuv has no sends of its own queued (so order is kept) and hands
// the rest to node:dgram on any error.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

// At most this many datagrams per call (the JS side chunks to it).
#define MAX_BUFS 1024
// Messages per sendmmsg(2): each is one datagram or one GSO super-packet.
#define MAX_MSGS 64
// The kernel's limit on segments in one GSO super-packet (UDP_MAX_SEGMENTS).
#define GSO_MAX_SEGS 64
// A super-packet is one IP packet before segmentation: under 64 KiB.
#define GSO_MAX_BYTES 65000

#define THROW_IF(cond, msg)                      \
  do {                                           \
    if (cond) {                                  \
      napi_throw_type_error(env, NULL, msg);     \
      return NULL;                               \
    }                                            \
  } while (0)

static int parse_address(const char *host, uint32_t port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof(*ss));
  if (host[0] == '\0') {  // a connected socket: the kernel knows the peer
    *len = 0;
    return 0;
  }
  if (strchr(host, ':') != NULL) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return -1;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    *len = sizeof(*a);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -1;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *len = sizeof(*a);
  }
  return 0;
}

static napi_value make_int(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

// send(fd, host, port, datagrams, gsoMax) (host '': the connected peer) ->
// datagrams sent (a prefix of the array), or -errno when not even the first
// went out. Each run of equal-sized datagrams of at most gsoMax bytes (the
// last of a run may be shorter) goes as one super-packet; gsoMax 0: none.
static napi_value Send(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  THROW_IF(argc < 5, "send(fd, host, port, datagrams, gsoMax)");

  int32_t fd;
  uint32_t port;
  uint32_t gso_max;
  char host[64];
  size_t host_len;
  THROW_IF(napi_get_value_int32(env, argv[0], &fd) != napi_ok, "fd must be a number");
  THROW_IF(napi_get_value_string_utf8(env, argv[1], host, sizeof(host), &host_len) != napi_ok, "host must be a string");
  THROW_IF(napi_get_value_uint32(env, argv[2], &port) != napi_ok || port > 65535, "port must be 0-65535");
  THROW_IF(napi_get_value_uint32(env, argv[4], &gso_max) != napi_ok, "gsoMax must be a number");

  uint32_t count;
  bool is_array;
  THROW_IF(napi_is_array(env, argv[3], &is_array) != napi_ok || !is_array, "datagrams must be an array");
  napi_get_array_length(env, argv[3], &count);
  if (count > MAX_BUFS) count = MAX_BUFS;

  struct sockaddr_storage ss;
  socklen_t ss_len;
  if (parse_address(host, port, &ss, &ss_len) != 0) return make_int(env, -EINVAL);

  static struct iovec iov[MAX_BUFS];
  for (uint32_t i = 0; i < count; i++) {
    napi_value el;
    napi_typedarray_type type;
    size_t length, offset;
    void *data;
    napi_value ab;
    napi_get_element(env, argv[3], i, &el);
    THROW_IF(napi_get_typedarray_info(env, el, &type, &length, &data, &ab, &offset) != napi_ok || type != napi_uint8_array,
             "datagrams must be Uint8Arrays");
    iov[i].iov_base = data;
    iov[i].iov_len = length;
  }

  static struct mmsghdr msgs[MAX_MSGS];
  static char control[MAX_MSGS][CMSG_SPACE(sizeof(uint16_t))];
  uint32_t segs_of[MAX_MSGS];
  uint32_t i = 0;
  int32_t sent = 0;
  while (i < count) {
    int n = 0;
    while (i < count && n < MAX_MSGS) {
      struct msghdr *m = &msgs[n].msg_hdr;
      memset(&msgs[n], 0, sizeof(msgs[n]));
      m->msg_name = ss_len > 0 ? &ss : NULL;
      m->msg_namelen = ss_len;
      m->msg_iov = &iov[i];
      size_t seg = iov[i].iov_len, bytes = seg;
      uint32_t segs = 1;
      i++;
      while (seg <= gso_max && i < count && segs < GSO_MAX_SEGS) {
        size_t len = iov[i].iov_len;
        if (len > seg || bytes + len > GSO_MAX_BYTES) break;
        segs++;
        bytes += len;
        i++;
        if (len < seg) break;  // only the last segment may be shorter
      }
      m->msg_iovlen = segs;
      if (segs > 1) {
        m->msg_control = control[n];
        m->msg_controllen = sizeof(control[n]);
        struct cmsghdr *c = CMSG_FIRSTHDR(m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size = (uint16_t)seg;
        memcpy(CMSG_DATA(c), &size, sizeof(size));
      }
      segs_of[n++] = segs;
    }
    int r;
    do {
      r = sendmmsg(fd, msgs, (unsigned)n, MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return make_int(env, sent > 0 ? sent : -errno);
    for (int k = 0; k < r; k++) sent += (int32_t)segs_of[k];
    if (r < n) break;  // the next message failed: the caller sends it alone and sees why
  }
  return make_int(env, sent);
}

// dontFragment(fd) -> 0, or -errno. Every datagram the socket sends leaves
// with DF set (IPv6: is never fragmented by this host), at its own size,
// whatever path MTU the kernel learned from ICMP: IP_PMTUDISC_PROBE.
//
// Why: the tunnel finds its path MTU itself (RFC 8899), which needs DF on
// every datagram. The kernel's default (IP_PMTUDISC_WANT) decides DF per IP
// packet, by its length: a GSO super-packet is longer than any MTU, so its
// segments left WITHOUT DF, and a router in front of a smaller link cut them
// into fragments instead of dropping them. Data then crossed a black hole in
// fragments (where fragments pass at all) while the search, sending single
// datagrams, saw another path. WANT also fragments single datagrams above an
// ICMP-learned MTU locally, so a probe of a size the path does not carry
// came back answered.
static napi_value DontFragment(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  THROW_IF(argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok, "dontFragment(fd)");
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return make_int(env, -errno);
  int v4 = IP_PMTUDISC_PROBE;
  if (ss.ss_family == AF_INET6) {
    int v6 = IPV6_PMTUDISC_PROBE;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v6, sizeof(v6)) != 0) return make_int(env, -errno);
    // A dual-stack socket's IPv4 traffic follows the IPv4 option; an IPV6_V6ONLY one has none.
    (void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v4, sizeof(v4));
    return make_int(env, 0);
  }
  if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v4, sizeof(v4)) != 0) return make_int(env, -errno);
  return make_int(env, 0);
}


// ---------------------------------------------------------------------------
// Batched receives.
//
// libuv reads a UDP socket one recvmsg(2) per datagram and Node makes one
// 'message' event of each: on the tunnel's direct path that is most of the
// receiving peer's CPU per datagram. Here a poll of our own on a dup of the
// socket's fd reads up to RECV_BATCH datagrams per recvmmsg(2) and hands them
// to JavaScript in one call. The caller stops libuv's reading first
// (recvStop on Node's handle), so every datagram is read once, by us; sends
// still go through the original fd. The dup keeps the socket open until
// recvStop() here, which the caller runs when the socket closes.

// Datagrams per recvmmsg(2), per wake-up and per call into JavaScript. One
// call per wake-up: the poll is level-triggered, so the loop comes straight
// back while datagrams wait, and in between its timers and other sockets
// run. 8 calls (512 datagrams, ~5 ms of work per wake-up) added ~4 ms to the
// echo RTT under bulk load (docs/BENCHMARKS.md).
#define RECV_BATCH 64

typedef struct {
  uv_poll_t poll;
  int fd;
  size_t max_size;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  unsigned char *bufs;
  struct mmsghdr msgs[RECV_BATCH];
  struct iovec iov[RECV_BATCH];
  struct sockaddr_storage from[RECV_BATCH];
  int stopped;
  // Datagrams dropped for being larger than max_size (truncated).
  uint32_t truncated;
} Receiver;

static void receiver_closed(uv_handle_t *h) {
  Receiver *r = (Receiver *)h->data;
  close(r->fd);
  free(r->bufs);
  free(r);
}

// The address of `ss` as Node formats it, reusing the previous string when the
// same peer sent the previous datagram (the common case).
static napi_value address_of(napi_env env, const struct sockaddr_storage *ss, const struct sockaddr_storage *prev,
                             napi_value prev_str, uint32_t *port) {
  char text[INET6_ADDRSTRLEN];
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    *port = ntohs(a->sin6_port);
    if (prev && prev_str && prev->ss_family == AF_INET6 &&
        memcmp(&((const struct sockaddr_in6 *)prev)->sin6_addr, &a->sin6_addr, sizeof(a->sin6_addr)) == 0)
      return prev_str;
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
  } else {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    *port = ntohs(a->sin_port);
    if (prev && prev_str && prev->ss_family == AF_INET &&
        ((const struct sockaddr_in *)prev)->sin_addr.s_addr == a->sin_addr.s_addr)
      return prev_str;
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
  }
  napi_value out;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &out);
  return out;
}

// Hands n received datagrams to the callback as one flat array:
// [Buffer, address, port, Buffer, address, port, ...].
static void deliver(Receiver *r, int n) {
  napi_env env = r->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value batch;
  napi_create_array_with_length(env, (size_t)n * 3, &batch);
  uint32_t k = 0;
  napi_value prev_str = NULL;
  const struct sockaddr_storage *prev = NULL;
  for (int i = 0; i < n; i++) {
    if (r->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      r->truncated++;
      continue;
    }
    napi_value buf, port_v;
    uint32_t port = 0;
    void *copy;
    napi_create_buffer_copy(env, r->msgs[i].msg_len, r->iov[i].iov_base, &copy, &buf);
    napi_value addr = address_of(env, &r->from[i], prev, prev_str, &port);
    prev = &r->from[i];
    prev_str = addr;
    napi_create_uint32(env, port, &port_v);
    napi_set_element(env, batch, k++, buf);
    napi_set_element(env, batch, k++, addr);
    napi_set_element(env, batch, k++, port_v);
  }
  if (k > 0) {
    napi_value cb, global, result;
    napi_get_reference_value(env, r->callback, &cb);
    napi_get_global(env, &global);
    napi_value len;
    napi_create_uint32(env, k, &len);
    napi_value argv[2] = {batch, len};
    if (napi_make_callback(env, r->context, global, cb, 2, argv, &result) != napi_ok) {
      // A listener threw: report it as a throwing 'message' listener would be
      // (process 'uncaughtException'), not leave it pending in our frame.
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value error;
        napi_get_and_clear_last_exception(env, &error);
        napi_fatal_exception(env, error);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_readable(uv_poll_t *h, int status, int events) {
  Receiver *r = (Receiver *)h->data;
  (void)events;
  if (r->stopped || status < 0) return;  // a poll error is transient: the next event tries again
  // The buffers and names are set once (RecvStart); the kernel changes only these.
  for (int i = 0; i < RECV_BATCH; i++) {
    r->msgs[i].msg_hdr.msg_namelen = sizeof(r->from[i]);
    r->msgs[i].msg_hdr.msg_flags = 0;
  }
  int n;
  do {
    n = recvmmsg(r->fd, r->msgs, RECV_BATCH, MSG_DONTWAIT, NULL);
  } while (n < 0 && errno == EINTR);
  // EAGAIN: drained. Any other error (an ICMP error queued on the socket)
  // is consumed by this call; the next readable event reads on.
  if (n > 0) deliver(r, n);
}

// recvStart(fd, maxSize, callback(batch, length)) -> a handle for recvStop,
// or -errno. Datagrams above maxSize bytes are dropped (counted).
static napi_value RecvStart(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  uint32_t max_size;
  napi_valuetype t;
  THROW_IF(argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok, "recvStart(fd, maxSize, callback)");
  THROW_IF(napi_get_value_uint32(env, argv[1], &max_size) != napi_ok || max_size < 1 || max_size > 65536,
           "maxSize must be 1-65536");
  THROW_IF(napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function, "callback must be a function");
  uv_loop_t *loop;
  THROW_IF(napi_get_uv_event_loop(env, &loop) != napi_ok, "no event loop");

  int dfd = dup(fd);
  if (dfd < 0) return make_int(env, -errno);
  Receiver *r = calloc(1, sizeof(Receiver));
  unsigned char *bufs = r ? malloc((size_t)RECV_BATCH * max_size) : NULL;
  if (!r || !bufs) {
    free(r);
    close(dfd);
    return make_int(env, -ENOMEM);
  }
  r->fd = dfd;
  r->max_size = max_size;
  r->env = env;
  r->bufs = bufs;
  for (int i = 0; i < RECV_BATCH; i++) {
    r->iov[i].iov_base = bufs + (size_t)i * max_size;
    r->iov[i].iov_len = max_size;
    r->msgs[i].msg_hdr.msg_name = &r->from[i];
    r->msgs[i].msg_hdr.msg_iov = &r->iov[i];
    r->msgs[i].msg_hdr.msg_iovlen = 1;
  }
  napi_create_reference(env, argv[2], 1, &r->callback);
  napi_value name;
  napi_create_string_utf8(env, "udp-batch:recv", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &r->context);
  int e = uv_poll_init(loop, &r->poll, dfd);
  if (e == 0) {
    r->poll.data = r;
    e = uv_poll_start(&r->poll, UV_READABLE, on_readable);
    if (e != 0) {
      napi_delete_reference(env, r->callback);
      napi_async_destroy(env, r->context);
      uv_close((uv_handle_t *)&r->poll, receiver_closed);
      return make_int(env, e);
    }
  } else {
    napi_delete_reference(env, r->callback);
    napi_async_destroy(env, r->context);
    close(dfd);
    free(bufs);
    free(r);
    return make_int(env, e);
  }
  napi_value ext;
  napi_create_external(env, r, NULL, NULL, &ext);
  return ext;
}

// recvStop(handle) -> datagrams dropped as too large. Stops reading and
// closes the dup (the socket closes once Node has closed its fd too).
// A second call does nothing.
static napi_value RecvStop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *p = NULL;
  THROW_IF(argc < 1 || napi_get_value_external(env, argv[0], &p) != napi_ok || !p, "recvStop(handle)");
  Receiver *r = (Receiver *)p;
  if (r->stopped) return make_int(env, (int32_t)r->truncated);
  r->stopped = 1;
  uint32_t truncated = r->truncated;
  uv_poll_stop(&r->poll);
  napi_delete_reference(env, r->callback);
  napi_async_destroy(env, r->context);
  uv_close((uv_handle_t *)&r->poll, receiver_closed);
  return make_int(env, (int32_t)truncated);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "send", NAPI_AUTO_LENGTH, Send, NULL, &fn);
  napi_set_named_property(env, exports, "send", fn);
  napi_create_function(env, "dontFragment", NAPI_AUTO_LENGTH, DontFragment, NULL, &fn);
  napi_set_named_property(env, exports, "dontFragment", fn);
  napi_create_function(env, "recvStart", NAPI_AUTO_LENGTH, RecvStart, NULL, &fn);
  napi_set_named_property(env, exports, "recvStart", fn);
  napi_create_function(env, "recvStop", NAPI_AUTO_LENGTH, RecvStop, NULL, &fn);
  napi_set_named_property(env, exports, "recvStop", fn);
  napi_value max;
  napi_create_uint32(env, MAX_BUFS, &max);
  napi_set_named_property(env, exports, "maxDatagrams", max);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
