/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/stream.h - byte streams over TCP and unix sockets (asyncio streams).
 *
 * A listening server (asyncio.start_server) hands each connection it
 * accepts to a callback as a vl_stream; a client makes one with
 * vl_stream_connect (asyncio.open_connection). A stream reads lines, exact
 * counts, everything up to the end, or whatever is there, each as a
 * future; it writes into a bounded output buffer and says when that buffer
 * has drained. Every call belongs to the loop's thread (volley/loop.h).
 *
 * ---- Addresses ---------------------------------------------------------------
 *
 *   tcp://127.0.0.1:PORT   tcp://[::1]:PORT   tcp://localhost:PORT (connect only)
 *   unix:///path/to.sock
 *   tls://host:PORT?cacert=F&capath=D&cert=F&key=F&sni=H&insecure=1 (connect)
 *   tls://127.0.0.1:PORT?cert=F&key=F&cacert=F&verify_client=1      (listen)
 *
 * A listener binds numeric addresses only (the bind happens inside the call,
 * which never blocks on DNS); port 0 lets the kernel pick one, which
 * vl_stream_server_port tells. A client resolves a host name on one of the
 * loop's worker threads (vl_loop_run_in_thread) and tries each address in
 * turn, IPv4 first, all within connect_timeout_ms.
 *
 * ---- TLS ---------------------------------------------------------------------
 *
 * A tls:// client takes the same parameters, and follows the same
 * verification rules, as rediss:// (volley/redis.h), with the same code
 * (OpenSSL 3, lib/tls.c): the server's chain must lead to the system's
 * trusted CAs, or to cacert= (a PEM file) / capath= (a hashed directory);
 * its certificate must name the host (DNS name, or IP address for an IP
 * literal), or sni= when given, which is also sent as SNI (an IP literal is
 * never sent as SNI); cert= and key= present a client certificate;
 * insecure=1 turns every check off, as an explicit opt-out. An unknown
 * parameter is VL_EINVAL. The handshake runs on the loop, never blocking,
 * within the same connect_timeout_ms as the TCP connect; a failed one (a
 * wrong CA, an expired certificate, a host-name mismatch) fails the connect
 * with VL_ECONN and OpenSSL's reason ("connect tls://127.0.0.1:7000: TLS:
 * certificate verify failed: certificate has expired").
 *
 * A tls:// server loads cert= and key= (and cacert=/capath=, the clients'
 * CAs, for verify_client=1, which then refuses a client without a
 * certificate that leads to them) once, at listen: a missing or bad file
 * fails the listen with VL_EINVAL naming the file. Each accepted connection
 * runs its handshake (SSL_accept) on the loop within handshake_timeout_ms;
 * on_accept is called only once it succeeded. A failed or timed-out
 * handshake is closed silently; vl_stream_server_handshake_failures counts
 * them and vl_stream_server_handshake_error tells the last reason.
 * Connections still in their handshake belong to the server: closing it
 * closes them.
 *
 * Once the handshake is done every rule below holds over TLS: the buffers
 * and their bounds count plaintext bytes (what the program reads and
 * writes; OpenSSL holds at most one record more per direction), a reset
 * gives VL_ECONN ("read tls://...: TLS: read: Connection reset by peer"),
 * a peer's close_notify or its EOF is the end of the stream, vl_stream_close
 * sends close_notify (one attempt, never a wait) once the output is out,
 * vl_stream_abort resets without it. A TLS 1.3 server that refuses the
 * client's certificate says so after the client's handshake is done: the
 * client's first read then fails with VL_ECONN and the server's alert.
 *
 * ---- The rules -----------------------------------------------------------------
 * Each has a test in tests/test_stream.c.
 *
 *  1. Futures follow volley/future.h: a call returns NULL only when out of
 *     memory (or when given a NULL stream or loop); every other failure
 *     arrives through the future. Each future completes exactly once, from
 *     the loop, never inside the call that made it, even when the bytes it
 *     asks for are already buffered.
 *  2. One read at a time. A read asked while another read of the same
 *     stream is pending fails with VL_EBUSY; the pending one goes on. The
 *     same holds for vl_stream_drain.
 *  3. A read consumes bytes only when it completes with VL_OK. A read that
 *     is cancelled, times out (vl_future_timeout) or fails (a line too long,
 *     the end of the stream before n bytes) consumes nothing: every byte it
 *     was waiting on stays buffered for the next read, in order. The stream
 *     stays usable after a cancelled read.
 *  4. Back-pressure both ways. A stream reads ahead from its socket until
 *     its read buffer holds read_buffer_max bytes (or what the pending read
 *     needs, if more: n for read_exactly, max_len + 2 for read_line,
 *     max + 1 for read_until_eof), then stops reading, so a peer that
 *     sends faster than the program reads fills its own socket buffers,
 *     never ours. vl_stream_write copies into an output buffer of at most
 *     write_buffer_max bytes and refuses (VL_EBUSY, nothing queued) past
 *     it; vl_stream_drain waits until the buffer is back at or below
 *     write_low_water. Memory per stream is thus bounded by about
 *     read_buffer_max + write_buffer_max whatever the peer does.
 *  5. Failures. A peer that resets the connection, or any other socket
 *     error, fails the pending read, drain and close with VL_ECONN and the
 *     reason ("read tcp://127.0.0.1:7000: Connection reset by peer"); later
 *     writes return VL_ECONN. Bytes already buffered stay readable: a read
 *     they satisfy still succeeds, later ones fail with VL_ECONN. The peer
 *     closing its side (EOF) is not a failure: see each read for what it
 *     does at EOF. Writes never raise SIGPIPE (send with MSG_NOSIGNAL).
 *  6. vl_stream_free closes the socket at once (unsent output is dropped)
 *     and completes each pending future of the stream with VL_ECANCELED,
 *     once. It is legal from inside any callback, including the stream's
 *     own futures' callbacks and the accept callback.
 *  7. The loop-alive rule (volley/loop.h): a stream keeps vl_loop_run
 *     running while it has a pending future (a connect, read, drain or
 *     close) or unsent output; an idle stream does not, though it goes on
 *     reading ahead while the loop runs. A listening server keeps it
 *     running until it is closed (as asyncio's serve_forever), unless made
 *     with server_holds_loop = 0.
 *
 * Freeing the loop frees every server and stream still open on it, as
 * vl_stream_server_close and vl_stream_free do.
 */
#ifndef VOLLEY_STREAM_H
#define VOLLEY_STREAM_H

#include "common.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_stream vl_stream;
typedef struct vl_stream_server vl_stream_server;
typedef struct vl_stream_buf vl_stream_buf;

/* Options for servers (inherited by the streams they accept) and clients.
 * Always start from vl_stream_options_init(&o), which fills the defaults
 * and struct_size; the struct only grows at its end, so a program built
 * against an older header keeps working. A struct_size this library does
 * not know makes the call fail with VL_EINVAL. 0 means "off" where a field
 * says so. */
typedef struct vl_stream_options {
    size_t struct_size;          /* set by vl_stream_options_init */
    uint64_t connect_timeout_ms; /* 5000; 0: none. Resolving and connecting,
                                  * all addresses together; the connect then
                                  * fails with VL_ETIMEDOUT */
    size_t read_buffer_max;      /* 256 KiB (>= 1): read-ahead bound (rule 4) */
    size_t write_buffer_max;     /* 1 MiB (>= 1): output buffer bound (rule 4) */
    size_t write_low_water;      /* 64 KiB (< write_buffer_max): drain's mark */
    int backlog;                 /* 511 (> 0): listen(2) backlog */
    int server_holds_loop;       /* 1: a listening server keeps vl_loop_run
                                  * running; 0: it accepts only while the loop
                                  * runs for another reason (rule 7) */
    uint64_t handshake_timeout_ms; /* 10000; 0: none. A tls:// server's bound
                                  * on each accepted connection's handshake;
                                  * past it the connection is closed (and
                                  * counted), never early. A program built
                                  * before this field gets the default */
} vl_stream_options;

/* Zeroes the first struct_size bytes of `o`, fills the defaults above of
 * every field within them and stores struct_size. Call it through
 * vl_stream_options_init(&o). NULL is a no-op. */
VL_EXPORT void vl_stream_options_init_sized(vl_stream_options *o, size_t struct_size);
#define vl_stream_options_init(o) vl_stream_options_init_sized((o), sizeof(*(o)))

/* ---- Servers ----------------------------------------------------------------- */

/* Called once per accepted connection, from the loop (the listener's I/O
 * callback). `s` is new and the callback's to own: keep it, and end it with
 * vl_stream_close or vl_stream_free. `srv` is borrowed; the callback may
 * close it (and free the loop). */
typedef void (*vl_stream_accept_fn)(vl_stream_server *srv, vl_stream *s, void *ud);

/* Listens on `addr` (SO_REUSEADDR; for unix://, a stale socket file at the
 * path is removed first, and the file is removed again on close) and
 * accepts connections for as long as the loop runs, calling on_accept for
 * each. `addr` and `o` are copied; `o` NULL means the defaults. Returns
 * NULL when out of memory, or when loop or on_accept is NULL. Otherwise a
 * server the caller owns and ends with vl_stream_server_close, also when
 * listening failed: vl_stream_server_status then says why (VL_EINVAL for a
 * malformed address, a host name or bad options; VL_ECONN when socket, bind or listen failed, as "listen
 * tcp://127.0.0.1:80: Permission denied"; VL_EINVAL for a tls:// file that
 * cannot be loaded, naming it; VL_ECLOSED while the loop is
 * being freed), and the server never calls on_accept. When accept(2) runs
 * out of file descriptors or memory, the server stops accepting for 100 ms
 * and tries again; connections that the library cannot allocate a stream
 * for are closed. */
VL_EXPORT vl_stream_server *vl_stream_listen(vl_loop *loop, const char *addr,
                                             const vl_stream_options *o,
                                             vl_stream_accept_fn on_accept, void *ud);

/* VL_OK while listening, or why listening failed (see vl_stream_listen);
 * VL_EINVAL for NULL. */
VL_EXPORT int vl_stream_server_status(const vl_stream_server *srv);

/* The detailed message of a failed listen, "" otherwise. Borrowed; valid
 * while the server is. */
VL_EXPORT const char *vl_stream_server_error(const vl_stream_server *srv);

/* tls:// servers: how many accepted connections failed their handshake
 * (or its timeout) and were closed without reaching on_accept; 0 for any
 * other server or NULL. */
VL_EXPORT uint64_t vl_stream_server_handshake_failures(const vl_stream_server *srv);

/* The last such failure's reason ("tcp://127.0.0.1:41234: TLS: handshake:
 * wrong version number"), "" when none. Borrowed; valid until the next
 * failure or the server's close. */
VL_EXPORT const char *vl_stream_server_handshake_error(const vl_stream_server *srv);

/* The TCP port the server listens on (the kernel's pick for port 0); 0 for
 * a unix socket, a failed server or NULL. */
VL_EXPORT int vl_stream_server_port(const vl_stream_server *srv);

/* Stops accepting, closes the listening socket and frees the server.
 * Streams it accepted are not touched: they stay open and owned by whoever
 * took them. Legal from inside any callback, on_accept included (no
 * further on_accept runs). NULL is a no-op. */
VL_EXPORT void vl_stream_server_close(vl_stream_server *srv);

/* ---- Clients ----------------------------------------------------------------- */

/* Connects to `addr` (copied; `o` NULL means the defaults). The future
 * completes with VL_OK and a value that is the new vl_stream *: take it
 * with vl_future_take (it is then the caller's, ended with vl_stream_close
 * or vl_stream_free); a stream left in the future is freed with it.
 * Failures: VL_EINVAL (malformed address, no port, bad options, a tls://
 * file that cannot be loaded), VL_ECONN (name not resolved, refused,
 * unreachable: "connect tcp://127.0.0.1:1: Connection refused"; a failed
 * TLS handshake),
 * VL_ETIMEDOUT (connect_timeout_ms passed), VL_ENOMEM, VL_ECLOSED (called
 * while the loop is being freed). Cancelling the future abandons the
 * connect and closes its socket. NULL only when out of memory or loop is
 * NULL. */
VL_EXPORT vl_future *vl_stream_connect(vl_loop *loop, const char *addr,
                                       const vl_stream_options *o);

/* ---- Reading ------------------------------------------------------------------
 * Each read returns a future whose value, on VL_OK, is a vl_stream_buf
 * (borrowed inside the callback through vl_future_value; keep it with
 * vl_future_take and free it with vl_stream_buf_free). Rules 2 and 3 hold
 * for all of them. A read after the stream failed gets what buffered bytes
 * can give it, else VL_ECONN (rule 5); after vl_stream_abort, VL_ECLOSED. */

/* One line: the bytes up to the next "\n", without it; a "\r" just before
 * the "\n" is removed too, so "a\r\n" and "a\n" both read as "a". max_len
 * bounds the line without its terminator (0: read_buffer_max). A longer
 * line fails with VL_EPROTO ("line longer than 100 bytes") as soon as that
 * is certain, and consumes nothing (rule 3): its bytes stay buffered, to be
 * skipped with read_exactly or read, or the stream closed. At the end of
 * the stream, a last line without "\n" is returned as it is (like fgets);
 * with nothing buffered the read fails with VL_ECLOSED ("end of stream"). */
VL_EXPORT vl_future *vl_stream_read_line(vl_stream *s, size_t max_len);

/* Exactly n bytes (n == 0 completes with an empty buffer). At the end of
 * the stream with fewer buffered, fails with VL_ECLOSED ("end of stream
 * after 3 of 10 bytes"); those bytes stay buffered. */
VL_EXPORT vl_future *vl_stream_read_exactly(vl_stream *s, size_t n);

/* Everything up to the end of the stream (the peer closed its side). More
 * than max bytes (0: read_buffer_max) fails with VL_EPROTO as soon as they
 * are buffered, consuming nothing. */
VL_EXPORT vl_future *vl_stream_read_until_eof(vl_stream *s, size_t max);

/* Whatever is buffered, at least 1 byte and at most max (0:
 * read_buffer_max), as soon as there is any. At the end of the stream with
 * nothing buffered, completes with VL_OK and an empty buffer (length 0),
 * like asyncio's read(). */
VL_EXPORT vl_future *vl_stream_read(vl_stream *s, size_t max);

/* A read's bytes. data is followed by a NUL byte (not counted in len), so
 * a line is also a C string (unless it holds NUL bytes itself). One
 * allocation: vl_stream_buf_free frees it (NULL is a no-op). NULL b gives
 * NULL and 0. */
VL_EXPORT const char *vl_stream_buf_data(const vl_stream_buf *b);
VL_EXPORT size_t vl_stream_buf_len(const vl_stream_buf *b);
VL_EXPORT void vl_stream_buf_free(vl_stream_buf *b);

/* Bytes read from the socket and not yet consumed by a read; 0 for NULL. */
VL_EXPORT size_t vl_stream_read_buffered(const vl_stream *s);

/* ---- Writing ------------------------------------------------------------------ */

/* Copies len bytes of data into the output buffer and returns: VL_OK;
 * VL_EBUSY when they do not fit under write_buffer_max (nothing is queued:
 * drain, then write again); VL_EINVAL when s or data is NULL, or len alone
 * exceeds write_buffer_max (split it); VL_ECONN once the stream failed
 * (rule 5); VL_ECLOSED after vl_stream_abort; VL_ENOMEM (nothing queued).
 * len 0 is VL_OK. `data` is the caller's again on return. Legal from any
 * callback. The bytes go out before the loop next waits for I/O, all the
 * writes of one loop iteration in one send; what the socket does not take
 * then is sent as it drains. */
VL_EXPORT int vl_stream_write(vl_stream *s, const void *data, size_t len);

/* Bytes in the output buffer, not yet taken by the socket; 0 for NULL. */
VL_EXPORT size_t vl_stream_write_buffered(const vl_stream *s);

/* asyncio's drain(): completes with VL_OK once the output buffer holds at
 * most write_low_water bytes (at once, from the loop, if it does already);
 * VL_ECONN when the stream fails first; VL_EBUSY when another drain is
 * pending (rule 2). Cancelling it changes nothing else. */
VL_EXPORT vl_future *vl_stream_drain(vl_stream *s);

/* ---- Ending ------------------------------------------------------------------- */

/* Graceful close: consumes `s` (the caller must not use it again). A
 * pending read completes with VL_ECLOSED at once; the output buffer is sent
 * (a pending drain completes as it does), then the socket is closed. The
 * future completes with VL_OK once all output was handed to the kernel and
 * the socket closed, or VL_ECONN when the stream failed before (or while)
 * flushing. A peer that never reads would keep it waiting: bound it with
 * vl_future_timeout; cancelling it (or its deadline) closes the socket at
 * once, dropping what was not sent. Bytes that arrive after close are not
 * read; as with any socket closed with unread input, the kernel may then
 * reset the connection. NULL only when out of memory (the stream is then
 * freed as by vl_stream_free) or s is NULL. */
VL_EXPORT vl_future *vl_stream_close(vl_stream *s);

/* Ends the connection at once with a reset (SO_LINGER 0): output and read
 * buffers are dropped, the pending read and drain complete with VL_ECLOSED
 * ("stream aborted"), later reads, drains and closes fail with VL_ECLOSED
 * and writes return it. The stream stays the caller's, to free with
 * vl_stream_free (or close). A failed or aborted stream is left as it is.
 * NULL is a no-op. */
VL_EXPORT void vl_stream_abort(vl_stream *s);

/* Frees the stream at once (rule 6): the socket is closed, unsent output
 * dropped, pending futures complete with VL_ECANCELED. Legal from inside
 * any callback. NULL is a no-op. */
VL_EXPORT void vl_stream_free(vl_stream *s);

#ifdef __cplusplus
}
#endif
#endif
