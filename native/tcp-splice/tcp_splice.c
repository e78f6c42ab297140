// Kernel-side forwarding for the relay: the bytes of a paired relay session
// go from one TCP socket to the other with splice(2) through a pipe, so they
// are never copied into the process and no JavaScript runs per read.
//
// Why: on the relay path the rendezvous only moves ciphertext between two
// connections, and in JavaScript each byte is copied out of the kernel and
// back in, with a read callback and a write request per chunk. With splice
// the kernel moves page references instead (docs/BENCHMARKS.md, "The relay
// hop in the kernel").
//
// The relay must still know where its frames begin (relay.ts, ResumablePair:
// a leg that dies is replaced at a frame boundary). So each direction reads
// a frame's 6-byte header into memory (recv, then write into the pipe, in
// order) and splices the body, whose length the header gives. The cursor
// (header bytes seen, body bytes left) goes in at start and comes back at
// stop, with the bytes read but not yet written (still in the pipe), so the
// JavaScript path can take over where this one stopped.
//
// The caller stops Node's reading of both sockets first and writes nothing
// to them while this runs. A poll of our own runs on a dup of each fd (the
// same pattern as udp-batch's receives). On end of stream or an error on
// either socket, polling stops and the callback gets (side, errno) (errno 0:
// end of stream); the caller then calls stop().
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

// A relay frame's header: 4-byte big-endian body length, version, kind.
#define FRAME_HEADER_LEN 6
// Pipe capacity we ask for. 64 KiB (the default) costs ~40% more CPU per
// byte than 256 KiB-1 MiB in a loopback test; the kernel may refuse (per-user
// pipe limits), and then the default is used.
#define PIPE_BYTES (256 * 1024)
// Fill-and-drain rounds per direction per wake-up before yielding to the
// event loop (the poll is level-triggered, so it comes straight back).
#define PUMP_ROUNDS 8

enum { WANT_READ = 0, WANT_WRITE = 1 };

typedef struct {
  int pipe_r, pipe_w;
  size_t chunk;      // bytes per splice from the socket: the pipe's capacity
  size_t in_pipe;    // read from the source, not yet written to the destination
  int frames;        // follow frame headers
  uint64_t max_body; // a header announcing more is refused (EMSGSIZE); 0: no limit
  uint8_t hdr[FRAME_HEADER_LEN];
  int hdr_len;       // header bytes of the current frame seen so far
  uint64_t remaining;  // body bytes of the current frame still to come
  int want;
} Dir;

typedef struct {
  uv_poll_t poll[2];
  int fd[2];         // our dups
  Dir dir[2];        // dir[i] reads fd[i] and writes fd[1 - i]
  napi_env env;
  napi_ref callback;
  napi_ref counters_ref;
  double *counters;  // bytes written, per direction, read by JavaScript at any time
  napi_async_context context;
  int polling;       // polls started and not stopped
  int stopped;       // stop() ran
  int open_polls;    // polls not yet closed (the struct is freed at 0)
  uint64_t progress; // bytes moved into or out of a pipe, ever
  int events[2];     // what each poll waits for now (-1: not started)
} Pair;

#define THROW_IF(cond, msg)                  \
  do {                                       \
    if (cond) {                              \
      napi_throw_type_error(env, NULL, msg); \
      return NULL;                           \
    }                                        \
  } while (0)

static napi_value make_int(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

// Result of fill(): bytes moved into the pipe (> 0), or one of these.
#define FILL_AGAIN 0
#define FILL_EOF (-1)
#define FILL_ERROR (-2)

// Reads what the source has into the (empty) pipe: the rest of a header,
// then body bytes up to the frame's end. errno is set on FILL_ERROR.
static ssize_t fill(Pair *p, int i) {
  Dir *d = &p->dir[i];
  int src = p->fd[i];
  ssize_t moved = 0;
  if (d->frames && d->remaining == 0) {
    ssize_t n;
    do {
      n = recv(src, d->hdr + d->hdr_len, FRAME_HEADER_LEN - d->hdr_len, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n == 0) return FILL_EOF;
    if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? FILL_AGAIN : FILL_ERROR;
    // The pipe is empty, so a few bytes always fit.
    ssize_t w = write(d->pipe_w, d->hdr + d->hdr_len, (size_t)n);
    if (w != n) {
      if (w >= 0) errno = EIO;
      return FILL_ERROR;
    }
    d->in_pipe += (size_t)n;
    p->progress += (uint64_t)n;
    d->hdr_len += (int)n;
    moved = n;
    if (d->hdr_len < FRAME_HEADER_LEN) return moved;
    d->remaining = ((uint64_t)d->hdr[0] << 24) | ((uint64_t)d->hdr[1] << 16) | ((uint64_t)d->hdr[2] << 8) | d->hdr[3];
    d->hdr_len = 0;
    if (d->max_body && d->remaining > d->max_body) {
      // Not followed: the caller ends the session. stop() reports the length
      // as the body bytes left, and the header stays in the pipe, unsent.
      errno = EMSGSIZE;
      return FILL_ERROR;
    }
    if (d->remaining == 0) return moved;
  }
  size_t want = d->chunk;
  if (d->frames && d->remaining < want) want = (size_t)d->remaining;
  ssize_t n;
  do {
    n = splice(src, NULL, d->pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    d->in_pipe += (size_t)n;
    p->progress += (uint64_t)n;
    if (d->frames) d->remaining -= (uint64_t)n;
    return moved + n;
  }
  // A header already in the pipe goes out first; the end or error shows again next round.
  if (moved > 0) return moved;
  if (n == 0) return FILL_EOF;
  return (errno == EAGAIN || errno == EWOULDBLOCK) ? FILL_AGAIN : FILL_ERROR;
}

// Moves direction i's bytes until the source has none or the destination is
// full. Returns 0, or the failing side in *side with errno (0: end of stream).
static int pump(Pair *p, int i, int *side, int *err) {
  Dir *d = &p->dir[i];
  int dst = p->fd[1 - i];
  for (int round = 0; round < PUMP_ROUNDS; round++) {
    if (d->in_pipe == 0) {
      ssize_t r = fill(p, i);
      if (r == FILL_AGAIN) {
        d->want = WANT_READ;
        return 0;
      }
      if (r == FILL_EOF || r == FILL_ERROR) {
        *side = i;
        *err = r == FILL_EOF ? 0 : errno;
        return -1;
      }
    }
    while (d->in_pipe > 0) {
      ssize_t n;
      do {
        n = splice(d->pipe_r, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      } while (n < 0 && errno == EINTR);
      if (n > 0) {
        d->in_pipe -= (size_t)n;
        p->progress += (uint64_t)n;
        p->counters[i] += (double)n;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        d->want = WANT_WRITE;
        return 0;
      }
      *side = 1 - i;
      *err = n < 0 ? errno : EPIPE;
      return -1;
    }
  }
  d->want = WANT_READ;
  return 0;
}

static void stop_polling(Pair *p) {
  if (!p->polling) return;
  p->polling = 0;
  uv_poll_stop(&p->poll[0]);
  uv_poll_stop(&p->poll[1]);
}

// What each fd is polled for: readable while its direction waits for data,
// writable while the other direction waits to write to it.
static void update_polls(Pair *p);
static void on_event(uv_poll_t *h, int status, int events);

static void report(Pair *p, int side, int err) {
  stop_polling(p);
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, result, argv[2];
  napi_get_reference_value(env, p->callback, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, side, &argv[0]);
  napi_create_int32(env, err, &argv[1]);
  if (napi_make_callback(env, p->context, global, cb, 2, argv, &result) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void update_polls(Pair *p) {
  for (int i = 0; i < 2; i++) {
    int ev = 0;
    if (p->dir[i].want == WANT_READ) ev |= UV_READABLE;
    if (p->dir[1 - i].want == WANT_WRITE) ev |= UV_WRITABLE;
    // Restarting a poll costs an epoll_ctl; most wake-ups change nothing.
    if (ev == p->events[i]) continue;
    p->events[i] = ev;
    uv_poll_start(&p->poll[i], ev, on_event);
  }
}

static void on_event(uv_poll_t *h, int status, int events) {
  Pair *p = (Pair *)h->data;
  if (!p->polling) return;
  int i = h == &p->poll[0] ? 0 : 1;
  int side = 0, err = 0;
  if (status < 0) {
    // libuv says only "error" (POLLERR, as UV_EBADF) and stops the poll. The
    // socket may still hold bytes that came before its error (a RST behind
    // data): read and write what can be, and the error shows in its turn.
    uint64_t before = p->progress;
    if (pump(p, i, &side, &err) < 0 || pump(p, 1 - i, &side, &err) < 0) {
      report(p, side, err);
      return;
    }
    if (p->progress == before) {
      socklen_t len = sizeof(err);
      if (getsockopt(p->fd[i], SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0) err = EIO;
      report(p, i, err);
      return;
    }
    p->events[i] = -1;  // libuv stopped this poll: start it again
    update_polls(p);
    return;
  }
  // Readable: this fd's direction reads. Writable: the other direction writes here.
  // report() runs JavaScript, which stops this pair: nothing of it is touched after.
  if (((events & UV_READABLE) && pump(p, i, &side, &err) < 0) ||
      ((events & UV_WRITABLE) && pump(p, 1 - i, &side, &err) < 0)) {
    report(p, side, err);
    return;
  }
  update_polls(p);
}

static void poll_closed(uv_handle_t *h) {
  Pair *p = (Pair *)h->data;
  if (--p->open_polls > 0) return;
  for (int i = 0; i < 2; i++) {
    if (p->fd[i] >= 0) close(p->fd[i]);
  }
  free(p);
}

static int open_dir(Dir *d) {
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -errno;
  d->pipe_r = fds[0];
  d->pipe_w = fds[1];
  fcntl(d->pipe_w, F_SETPIPE_SZ, PIPE_BYTES);  // best effort
  int size = fcntl(d->pipe_w, F_GETPIPE_SZ);
  d->chunk = size > 0 ? (size_t)size : 65536;
  return 0;
}

static void close_dir(Dir *d) {
  if (d->pipe_r >= 0) close(d->pipe_r);
  if (d->pipe_w >= 0) close(d->pipe_w);
  d->pipe_r = d->pipe_w = -1;
}

// Reads a cursor argument: header bytes seen (a Buffer of 0-5 bytes) and body bytes left.
static int read_cursor(napi_env env, napi_value hdr_v, napi_value rem_v, Dir *d) {
  void *data = NULL;
  size_t len = 0;
  double rem = 0;
  if (napi_get_buffer_info(env, hdr_v, &data, &len) != napi_ok || len >= FRAME_HEADER_LEN) return -1;
  if (napi_get_value_double(env, rem_v, &rem) != napi_ok || rem < 0 || rem > 4294967295.0) return -1;
  if (len > 0 && rem > 0) return -1;  // inside a header, or inside a body: not both
  memcpy(d->hdr, data, len);
  d->hdr_len = (int)len;
  d->remaining = (uint64_t)rem;
  return 0;
}

// start(fdA, fdB, frames, hdrA, remA, hdrB, remB, counters, callback(side, errno)[, maxBody])
//   -> a handle for stop(), or -errno.
// counters: a Float64Array(2), bytes written A->B and B->A, updated in place.
// maxBody: a frame header that announces a longer body stops the forwarding
// with EMSGSIZE (0 or absent: no limit).
static napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  THROW_IF(argc < 9, "start(fdA, fdB, frames, hdrA, remA, hdrB, remB, counters, callback)");
  int32_t fda, fdb;
  bool frames;
  THROW_IF(napi_get_value_int32(env, argv[0], &fda) != napi_ok || fda < 0, "fdA must be a file descriptor");
  THROW_IF(napi_get_value_int32(env, argv[1], &fdb) != napi_ok || fdb < 0, "fdB must be a file descriptor");
  THROW_IF(napi_get_value_bool(env, argv[2], &frames) != napi_ok, "frames must be a boolean");
  napi_typedarray_type tt;
  size_t tlen;
  void *tdata;
  THROW_IF(napi_get_typedarray_info(env, argv[7], &tt, &tlen, &tdata, NULL, NULL) != napi_ok ||
               tt != napi_float64_array || tlen < 2,
           "counters must be a Float64Array(2)");
  napi_valuetype t;
  THROW_IF(napi_typeof(env, argv[8], &t) != napi_ok || t != napi_function, "callback must be a function");
  double max_body = 0;
  THROW_IF(argc >= 10 && (napi_get_value_double(env, argv[9], &max_body) != napi_ok || max_body < 0 ||
                          max_body > 4294967295.0),
           "maxBody must be a byte count");
  uv_loop_t *loop;
  THROW_IF(napi_get_uv_event_loop(env, &loop) != napi_ok, "no event loop");

  Pair *p = calloc(1, sizeof(Pair));
  if (!p) return make_int(env, -ENOMEM);
  p->fd[0] = p->fd[1] = -1;
  for (int i = 0; i < 2; i++) {
    p->dir[i].pipe_r = p->dir[i].pipe_w = -1;
    p->dir[i].frames = frames;
    p->dir[i].max_body = (uint64_t)max_body;
  }
  if (read_cursor(env, argv[3], argv[4], &p->dir[0]) != 0 || read_cursor(env, argv[5], argv[6], &p->dir[1]) != 0) {
    free(p);
    napi_throw_type_error(env, NULL, "a cursor is a Buffer of 0-5 header bytes and the body bytes left");
    return NULL;
  }
  int e = 0;
  p->fd[0] = dup(fda);
  if (p->fd[0] < 0) e = -errno;
  if (!e) {
    p->fd[1] = dup(fdb);
    if (p->fd[1] < 0) e = -errno;
  }
  if (!e) e = open_dir(&p->dir[0]);
  if (!e) e = open_dir(&p->dir[1]);
  if (!e) e = uv_poll_init(loop, &p->poll[0], p->fd[0]);
  if (!e) {
    p->open_polls = 1;
    e = uv_poll_init(loop, &p->poll[1], p->fd[1]);
    if (!e) p->open_polls = 2;
  }
  if (e) {
    close_dir(&p->dir[0]);
    close_dir(&p->dir[1]);
    if (p->open_polls == 0) {
      for (int i = 0; i < 2; i++)
        if (p->fd[i] >= 0) close(p->fd[i]);
      free(p);
    } else {
      // poll_closed closes the dups and frees once every initialised poll is closed.
      p->poll[0].data = p;
      uv_close((uv_handle_t *)&p->poll[0], poll_closed);
    }
    return make_int(env, e);
  }
  p->poll[0].data = p->poll[1].data = p;
  p->env = env;
  p->counters = (double *)tdata;
  napi_create_reference(env, argv[7], 1, &p->counters_ref);
  napi_create_reference(env, argv[8], 1, &p->callback);
  napi_value name;
  napi_create_string_utf8(env, "tcp-splice", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &p->context);
  p->polling = 1;
  p->events[0] = p->events[1] = -1;
  p->dir[0].want = p->dir[1].want = WANT_READ;
  update_polls(p);
  napi_value ext;
  napi_create_external(env, p, NULL, NULL, &ext);
  return ext;
}

// The bytes still in a direction's pipe, as a Buffer.
static napi_value drain_pipe(napi_env env, Dir *d) {
  napi_value buf;
  void *data;
  napi_create_buffer(env, d->in_pipe, &data, &buf);
  size_t got = 0;
  while (got < d->in_pipe) {
    ssize_t n = read(d->pipe_r, (char *)data + got, d->in_pipe - got);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // cannot happen: the bytes are in the pipe
  }
  if (got < d->in_pipe) {
    napi_value view;
    napi_create_buffer_copy(env, got, data, NULL, &view);
    return view;
  }
  return buf;
}

// stop(handle) -> [pendingA, hdrA, remA, pendingB, hdrB, remB]: for each
// direction (A: what A sent to B), the bytes read and not yet written, and
// the cursor after them. Stops polling and closes the dups and pipes; the
// sockets themselves stay open. A second call returns undefined.
static napi_value Stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *ptr = NULL;
  THROW_IF(argc < 1 || napi_get_value_external(env, argv[0], &ptr) != napi_ok || !ptr, "stop(handle)");
  Pair *p = (Pair *)ptr;
  napi_value undef;
  napi_get_undefined(env, &undef);
  if (p->stopped) return undef;
  p->stopped = 1;
  stop_polling(p);
  napi_value out;
  napi_create_array_with_length(env, 6, &out);
  for (int i = 0; i < 2; i++) {
    Dir *d = &p->dir[i];
    napi_value pend = drain_pipe(env, d), hdr, rem;
    void *hdata;
    napi_create_buffer_copy(env, (size_t)d->hdr_len, d->hdr, &hdata, &hdr);
    napi_create_double(env, (double)d->remaining, &rem);
    napi_set_element(env, out, i * 3, pend);
    napi_set_element(env, out, i * 3 + 1, hdr);
    napi_set_element(env, out, i * 3 + 2, rem);
    close_dir(d);
  }
  napi_delete_reference(env, p->callback);
  napi_delete_reference(env, p->counters_ref);
  p->counters = NULL;
  napi_async_destroy(env, p->context);
  uv_close((uv_handle_t *)&p->poll[0], poll_closed);
  uv_close((uv_handle_t *)&p->poll[1], poll_closed);
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, Start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "stop", NAPI_AUTO_LENGTH, Stop, NULL, &fn);
  napi_set_named_property(env, exports, "stop", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
