/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/mysql.h - MySQL/MariaDB on the loop: connections, results,
 * prepared statements, streaming, transactions and pools.
 *
 * Built on MariaDB Connector/C's non-blocking API (the mysql_*_start /
 * mysql_*_cont pairs). The loop never blocks: host names are resolved on a
 * worker thread (Connector/C would call getaddrinfo inside connect), a TLS
 * connect runs on one (see "TLS"), and every other network step waits for
 * socket readiness on the loop.
 *
 * ---- Endpoint URLs -------------------------------------------------------
 *
 *   mysql://user:password@host[:port]/db?param=value&...
 *   mysql://user:password@localhost/db?socket=/run/mysqld/mysqld.sock
 *   unix:///run/mysqld/mysqld.sock?user=u&password=p&db=d
 *
 * Both unix-socket forms are accepted: `socket=` on a mysql:// URL (the host
 * is then ignored) and a unix:// URL whose path is the socket. The port
 * defaults to 3306. User, password and database are percent-decoded. A host
 * name is resolved off the loop and Connector/C is given the numeric
 * address; "localhost" therefore means TCP to 127.0.0.1, never a socket,
 * unless `socket=` says so.
 *
 * Parameters (they override vl_mysql_options):
 *   connect_timeout_ms=N   give up connecting (TCP + handshake) after N ms
 *   query_timeout_ms=N     default server-side statement limit (see below)
 *   read_timeout_ms=N      close a connection whose server is silent that long
 *                          while it owes a reply (see "Timeouts"; 0 = off)
 *   max_result_bytes=N     limits on what a server may send (see "Limits")
 *   max_row_bytes=N
 *   multi_statements=1     allow "a; b; c" in one vl_mysql_query
 *   charset=NAME           connection character set (default utf8mb4)
 *   init_sql=SQL           run once right after every connect
 *   socket=/path           connect through this unix socket
 *   user=, password=, db=  for unix:// URLs
 * An unknown parameter fails the connection with VL_EINVAL.
 *
 * ---- TLS -----------------------------------------------------------------
 *
 * Any ssl-* parameter turns TLS on, verified by default:
 *   ssl-mode=verify-identity  the default once TLS is on: the server's
 *                             certificate must chain to a trusted CA and
 *                             name the URL's host as written (a name or an
 *                             IP address), never the address it resolved to
 *   ssl-mode=verify-ca        the chain only, any name. It needs ssl-ca or
 *                             ssl-capath (VL_EINVAL without): Connector/C
 *                             3.3 checks a chain without the name only
 *                             against CAs it was given
 *   ssl-mode=required         encrypted, NOT verified (anyone on the path
 *                             can pretend to be the server), even when
 *                             ssl-ca or ssl-capath is given (as MySQL's own
 *                             client does: say verify-ca to check them)
 *   ssl-mode=disabled         no TLS: the default without ssl-* parameters
 *                             (VL_EINVAL together with other ssl-* ones)
 *   ssl-ca=FILE, ssl-capath=DIR   the trusted CAs (PEM); without either, the
 *                             system's store
 *   ssl-cert=FILE, ssl-key=FILE   a client certificate and its key (both)
 *   ssl-verify-server-cert=0|1    the older spelling: 0 is ssl-mode=required,
 *                             1 is verify-identity (ssl-mode, if also given,
 *                             decides)
 *   ssl-cipher=LIST           OpenSSL's names (TLS 1.2 ciphers or TLS 1.3
 *                             suites)
 *   tls-version=LIST          of TLSv1.0, TLSv1.1, TLSv1.2, TLSv1.3,
 *                             comma-separated (anything else: VL_EINVAL)
 * ssl-mode=preferred is refused with VL_EINVAL: it falls back to clear
 * text without a word. Unknown ssl-* / tls-* parameters (ssl=1, ssl_ca=)
 * are refused too, and so is TLS over a unix socket. In every mode a server
 * that does not offer TLS is refused before the client sends anything (no
 * user name, no scramble): never a fallback to clear text.
 *
 * How it stays off the loop: Connector/C 3.3 cannot shake hands without
 * blocking (its TCP connect leaves the socket in blocking mode, and
 * SSL_connect then waits in recv()). With TLS on, the whole connect
 * (resolution, TCP, handshake, authentication, init commands) runs as one
 * blocking mysql_real_connect on one of the loop's worker threads (as
 * vl_loop_run_in_thread). Unlike the clear-text connect, Connector/C gets
 * the host name as written, resolves it there and checks the certificate
 * against it; "localhost" still means TCP, never the unix socket, and a
 * host with a ',' (Connector/C's host list) is refused with VL_EINVAL.
 * connect_timeout_ms bounds the connect twice: the loop's own deadline
 * fails the connection on time even while the worker is blocked, and
 * Connector/C gives up any single read or write of the handshake that waits
 * longer than it (rounded up to whole seconds). The worker's handle is
 * closed when it returns; freeing the connection or the loop meanwhile
 * completes the connection's futures at once with VL_ECANCELED. With
 * connect_timeout_ms 0, a server that never answers holds the worker for
 * good. A connect through TLS occupies a worker thread for as long as it
 * takes (vl_loop_set_threads sets how many there are) and, as a job on a
 * thread, keeps vl_loop_run running until it returns.
 *
 * The connected handle then comes back to the loop and every statement
 * runs non-blocking as without TLS. Connector/C's non-blocking calls read
 * and write through SSL_read and SSL_write; when OpenSSL answers WANT_READ
 * or WANT_WRITE, the call suspends with MYSQL_WAIT_READ or MYSQL_WAIT_WRITE
 * (never MYSQL_WAIT_TIMEOUT: Connector/C's own read and write timeouts are
 * unset after connecting, and read_timeout_ms is volley's) and the loop
 * waits for the socket as for any connection. That needs a non-blocking
 * socket, which Connector/C does not leave behind (OpenSSL would then wait
 * inside each _start/_cont call): volley sets O_NONBLOCK on it after the
 * handshake, and Connector/C never changes it back.
 *
 * A certificate that fails verification fails the connect with VL_ECONN,
 * errno 2026 (CR_SSL_CONNECTION_ERROR) and OpenSSL's reason in the message
 * ("self-signed certificate in certificate chain", "certificate has
 * expired"...); one that does not name the host says "the certificate does
 * not name the host 'H' as written in the URL"; a server without TLS "SSL
 * is required, but the server does not support it". An account created
 * with REQUIRE SSL, reached without TLS, is refused with errno 1045 like a
 * wrong password (the server says no more); the message then adds that the
 * connection did not use TLS.
 *
 * ---- Errors --------------------------------------------------------------
 *
 * Messages name the endpoint by its display form (the URL without the
 * password, e.g. "mysql://127.0.0.1:3306/app") and never contain a password.
 *
 *   VL_EINVAL        bad URL, bad argument, parameter count mismatch
 *   VL_EUNSUPPORTED  a feature the server lacks (bulk execution on MySQL)
 *   VL_ECONN         the connection could not be made or was lost. This
 *                    covers refused ports, DNS failures AND the server's
 *                    refusal to log in (bad credentials: errno 1045,
 *                    unknown database: errno 1049): connecting failed, and
 *                    vl_future_mysql_errno() tells which way. A connection lost
 *                    under a statement (errno 2006/2013, or killed) fails
 *                    that statement with VL_ECONN and is closed; one lost
 *                    while idle fails the next statement with VL_ECONN.
 *   VL_ESERVER       the server answered a statement with an error packet:
 *                    syntax (1064), duplicate key (1062)... The connection
 *                    stays usable.
 *   VL_ETIMEDOUT     a server-side statement limit expired (errno 1969; the
 *                    connection stays usable), a client-side deadline or
 *                    read_timeout_ms passed (the connection is closed), or
 *                    connecting took longer than connect_timeout_ms.
 *   VL_EPROTO        the server broke the protocol or volley's limits: a
 *                    greeting that is not MySQL's, a malformed packet, a
 *                    LOAD DATA LOCAL INFILE request (volley never offers
 *                    CLIENT_LOCAL_FILES and never sends a file), a row or
 *                    result over max_row_bytes / max_result_bytes. The
 *                    connection is closed; vl_future_mysql_errno() gives
 *                    Connector/C's code when it noticed (e.g. 2020, 2027).
 *   VL_ECANCELED     cancelled, or the connection/pool was freed.
 *   VL_ECLOSED       the connection was closed earlier (after a lost
 *                    connection or a cancelled in-flight statement).
 *
 * Server errors are data. A future that failed because of Connector/C or
 * the server carries a vl_mysql_result value holding the MySQL errno,
 * SQLSTATE and message: read them with vl_future_mysql_errno(f),
 * vl_future_mysql_sqlstate(f) and vl_future_error(f). For a multi-statement call
 * the same value also holds the result sets of the statements that
 * succeeded before the failing one.
 *
 * ---- Timeouts ------------------------------------------------------------
 *
 * Three kinds, with different effects on the connection:
 *  - Server-side (preferred): vl_mysql_query_timeout(), or the connection's
 *    query_timeout_ms, sends "SET STATEMENT max_statement_time=S FOR <sql>".
 *    MariaDB aborts the statement with errno 1969; the future fails with
 *    VL_ETIMEDOUT and the connection serves the next statement.
 *  - Client-side: vl_future_timeout() or vl_future_cancel() on a statement
 *    already sent. The reply can no longer be matched to anything, so the
 *    connection is closed (a pool never gets it back) and the future fails
 *    with VL_ETIMEDOUT / VL_ECANCELED. Later statements on that connection
 *    fail with VL_ECLOSED. Cancelling a statement still waiting in the
 *    connection's queue just removes it. Streams are the exception: see
 *    vl_mysql_query_stream().
 *  - volley's own read timeout, read_timeout_ms (default 60000 ms): from
 *    the moment a statement is sent until its last row, the server may stay
 *    silent at most that long (each byte received starts the count again).
 *    Past it the statement fails with VL_ETIMEDOUT, the connection is closed
 *    and what was queued behind it fails with VL_ECLOSED. It covers a server
 *    that stalls mid-result, is stopped (SIGSTOP), or vanished without a
 *    reset, which no other limit does when the caller set no deadline. A
 *    statement that legitimately computes for longer before its first row
 *    needs a larger value (or 0 = off); prefer query_timeout_ms to bound
 *    statements themselves.
 *
 * ---- Limits --------------------------------------------------------------
 *
 * What a server can make volley hold in memory is bounded:
 *   max_row_bytes     (default 64 MiB) the cells of one row, in bytes.
 *                     Connector/C is also told to refuse any packet larger
 *                     than this plus 64 KiB, so a hostile length prefix
 *                     costs nothing. While connecting the packet limit is
 *                     64 KiB (a greeting is about 100 bytes), so a peer that
 *                     is not a MySQL server fails at once with VL_EPROTO
 *                     rather than at the connect deadline; init_sql must
 *                     not return rows larger than that.
 *   max_result_bytes  (default 256 MiB) the cells of one call's results
 *                     together (every result set of a multi-statement call);
 *                     for a stream, of each batch. For prepared statements
 *                     it also bounds Connector/C's buffer of the result,
 *                     which is slightly larger than the cells.
 * 0 means no limit of volley's own (the protocol's 1 GiB packet maximum
 * still applies). Exceeding one fails that statement with VL_EPROTO and a
 * message naming the limit, and closes that connection (the rest of the
 * reply is not read); other connections are unaffected.
 *
 * ---- Threads -------------------------------------------------------------
 *
 * Everything here belongs to the loop's thread. Callbacks run from the loop
 * (volley/future.h, rules 1-5): never inside the call that made the future.
 * Every call below that returns a future returns NULL only when out of
 * memory or when its handle (connection, pool, transaction) is NULL (rule
 * 1); every other failure, a bad argument included, arrives through the
 * future. A connection keeps vl_loop_run running only while a future of it
 * is pending (the loop-alive rule of volley/loop.h): a connect nobody waits
 * for, such as one whose vl_mysql_ready future timed out, lets it return.
 *
 * Messages name what failed and where, never with the password: a
 * statement's failure starts with its verb and the endpoint ("SELECT on
 * mysql://127.0.0.1:3306/app: ERROR 1064 (42000): ..."), a connect timeout
 * with "connect mysql://...: timed out after N ms".
 */
#ifndef VOLLEY_MYSQL_H
#define VOLLEY_MYSQL_H

#include "common.h"
#include "future.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_mysql vl_mysql;
typedef struct vl_mysql_result vl_mysql_result;
typedef struct vl_mysql_pool vl_mysql_pool;
typedef struct vl_mysql_tx vl_mysql_tx;

/* ======================================================================
 * Connections
 * ====================================================================== */

#define VL_MYSQL_DEFAULT_READ_TIMEOUT_MS 60000u
#define VL_MYSQL_DEFAULT_MAX_RESULT_BYTES ((uint64_t)256 << 20)
#define VL_MYSQL_DEFAULT_MAX_ROW_BYTES ((uint64_t)64 << 20)

/* Options of a connection. ABI rule (the same for every options struct of
 * volley, see vl_redis_options): always start from vl_mysql_options_init(&o),
 * which fills the defaults and sets struct_size to the size your program was
 * compiled with; new fields are only ever appended at the end, and fields a
 * program built against an older header does not know take their defaults.
 * A struct_size the library does not know makes the connection failed:
 * every future fails with VL_EINVAL ("options: struct_size N unknown to
 * this volley (built against a newer header?)"). Times are uint64_t
 * milliseconds, 0 = off. */
typedef struct vl_mysql_options {
    size_t struct_size;          /* set by vl_mysql_options_init */
    uint64_t connect_timeout_ms; /* 5000 (as for Redis); 0 = no limit */
    uint64_t query_timeout_ms;   /* default server-side limit; 0 = off */
    uint64_t read_timeout_ms;    /* server silence while a reply is owed; 60000; 0 = off */
    uint64_t max_result_bytes;   /* see "Limits"; 256 MiB; 0 = no limit */
    uint64_t max_row_bytes;      /* see "Limits"; 64 MiB; 0 = no limit */
    int multi_statements;        /* 1 allows "a; b" in vl_mysql_query; 0 */
    const char *charset;         /* NULL = "utf8mb4" (copied) */
    const char *init_sql;        /* NULL = none (copied) */
} vl_mysql_options;

/* Zeroes the first struct_size bytes of `o`, fills the defaults above of
 * every field wholly within them and stores struct_size. Call it as
 * vl_mysql_options_init(&o). NULL is a no-op. */
VL_EXPORT void vl_mysql_options_init_sized(vl_mysql_options *o, size_t struct_size);
#define vl_mysql_options_init(o) vl_mysql_options_init_sized((o), sizeof(*(o)))

/* Makes a connection and starts connecting at once (resolve, TCP or unix
 * socket, handshake, init_sql). Statements may be queued right away: they
 * run in order once connected, or fail with the connect error.
 * `url` and `opts` (NULL for the defaults) are copied.
 * Returns NULL only when out of memory. A bad URL does not return NULL:
 * the connection is returned failed, and every future made on it (start
 * with vl_mysql_ready) fails with VL_EINVAL.
 * The caller owns the connection and ends it with vl_mysql_free (or
 * vl_loop_free does). */
VL_EXPORT vl_mysql *vl_mysql_new(vl_loop *loop, const char *url, const vl_mysql_options *opts);

/* A future that completes once the connection is established (VL_OK) or
 * failed (the connect error, with errno/SQLSTATE readable through
 * vl_future_mysql_errno). It queues like a statement. A connection that never
 * connected fails every future made on it with its connect error; one that
 * was open and then closed fails them with VL_ECLOSED. A connection never
 * reconnects by itself. NULL only when out of memory. */
VL_EXPORT vl_future *vl_mysql_ready(vl_mysql *c);

/* Frees the connection now. Every pending future (queued or in flight)
 * completes with VL_ECANCELED. It never blocks: an idle connection says
 * COM_QUIT (a few bytes into an empty socket buffer); a busy or broken one
 * has its socket shut down first, and a statement in flight may still
 * complete on the server. Legal from inside any callback, including a
 * stream's batch callback (the close then happens when that callback
 * returns). NULL is a no-op. vl_loop_free frees open connections before it
 * runs their cancelled callbacks; inside those callbacks the connection's
 * memory is still there: vl_mysql_free on it is a no-op and every call on it
 * fails with VL_ECLOSED (through its future). */
VL_EXPORT void vl_mysql_free(vl_mysql *c);

/* The endpoint's display form (no password). Borrowed; valid until free. */
VL_EXPORT const char *vl_mysql_display(const vl_mysql *c);

/* The last detailed error of the connection (a failed connect, a lost
 * connection, a statement's failure), "" when there was none; the same
 * text as that future's vl_future_error. Borrowed: valid until the next
 * call on c. Never contains the password. "" for NULL. */
VL_EXPORT const char *vl_mysql_error(const vl_mysql *c);

/* 1 once connected and not closed, 0 otherwise. */
VL_EXPORT int vl_mysql_is_open(const vl_mysql *c);

/* ---- Text queries ---- */

/* Runs `sql` (copied) and completes with a buffered vl_mysql_result: every
 * row of every result set, in one allocation arena.
 * Statements on a connection run one at a time, in call order (FIFO).
 * Multiple statements ("a; b") need multi_statements=1; each statement's
 * result is one link of the vl_mysql_result_next() chain.
 * Returns NULL only when out of memory. Value: read it with
 * vl_future_mysql_result(); borrowed inside the callback, kept only with
 * vl_future_take() and then freed with vl_mysql_result_free(). */
VL_EXPORT vl_future *vl_mysql_query(vl_mysql *c, const char *sql);

/* The same with a server-side statement limit: timeout_ms is sent as
 * SET STATEMENT max_statement_time=<seconds> FOR <sql>. On expiry the
 * future fails with VL_ETIMEDOUT, errno 1969, and the connection stays
 * usable. timeout_ms == 0 uses the connection's query_timeout_ms. In a
 * multi-statement call the limit applies to the first statement only (that
 * is how SET STATEMENT works); the server rejects it for statements it does
 * not support, such as SET STATEMENT itself. */
VL_EXPORT vl_future *vl_mysql_query_timeout(vl_mysql *c, const char *sql, uint64_t timeout_ms);

/* Runs a query without buffering its rows: rows arrive in batches of at
 * most `batch_rows` (0 means 1000) and `cb(batch, ud)` is called for each
 * batch, from the loop, in order. `batch` is a result (columns and rows,
 * single result set) borrowed for the duration of the call only; it must
 * not be taken or freed. The returned future completes after the last
 * batch with VL_OK and a result that has the columns, no rows, and
 * vl_mysql_result_affected_rows() = the number of rows streamed; or fails.
 * The callback never runs after the future completed. It may cancel the
 * stream, queue statements or free the connection.
 * Cancelling (or a deadline): while the server is still executing the
 * statement the connection is closed, as for any statement; once rows are
 * flowing the rest is read and dropped (drained) so the connection stays
 * clean, and the future completes with VL_ECANCELED/VL_ETIMEDOUT at once.
 * Multi-statement SQL is not streamed: only the first result set is read
 * and the call fails with VL_EINVAL if more follow. */
typedef void (*vl_mysql_batch_cb)(vl_mysql_result *batch, void *ud);
VL_EXPORT vl_future *vl_mysql_query_stream(vl_mysql *c, const char *sql, size_t batch_rows,
                                           vl_mysql_batch_cb cb, void *ud);

/* A round trip (COM_PING). Completes with VL_OK or VL_ECONN. */
VL_EXPORT vl_future *vl_mysql_ping(vl_mysql *c);

/* Escapes `src` (len bytes) for use inside a quoted SQL string literal, in
 * the connection's character set and SQL mode (NO_BACKSLASH_ESCAPES is
 * honoured). Writes a NUL-terminated string to `dst`, which must hold at
 * least 2*len+1 bytes. Returns the length written (without the NUL), or
 * VL_EINVAL (a NULL argument or dstcap too small), or VL_ESTATE (not
 * connected yet: the character set is only known after the handshake).
 * Prefer prepared statements (vl_mysql_execute) for user input. */
VL_EXPORT long vl_mysql_escape(vl_mysql *c, char *dst, size_t dstcap, const char *src,
                               size_t len);

/* ---- Prepared statements (binary protocol) ----
 *
 * THE SAFE WAY TO PASS USER INPUT: values travel separately from the SQL
 * text and are never parsed as SQL. Never paste user strings into SQL.
 *
 * Parameters are an explicit array with a type tag; no variadic setters.
 * The helpers below build one by value:
 *   vl_mysql_param ps[] = { vl_mysql_p_int64(42), vl_mysql_p_str("bob") };
 */
enum {
    VL_MYSQL_P_NULL = 0,
    VL_MYSQL_P_INT64,
    VL_MYSQL_P_UINT64,
    VL_MYSQL_P_DOUBLE,
    VL_MYSQL_P_STRING,   /* text in the connection's character set */
    VL_MYSQL_P_BLOB,     /* bytes */
    VL_MYSQL_P_DATE,     /* uses year, month, day */
    VL_MYSQL_P_TIME,     /* uses negative, hour (may exceed 24), minute, second, usec */
    VL_MYSQL_P_DATETIME  /* every field but negative */
};

typedef struct vl_mysql_time {
    int negative;
    unsigned year, month, day, hour, minute, second;
    unsigned long usec;
} vl_mysql_time;

typedef struct vl_mysql_param {
    int type; /* VL_MYSQL_P_* */
    union {
        int64_t i64;
        uint64_t u64;
        double d;
        struct {
            const void *ptr; /* need not be NUL-terminated */
            size_t len;
        } str;
        vl_mysql_time t;
    } v;
} vl_mysql_param;

static inline vl_mysql_param vl_mysql_p_null(void)
{
    vl_mysql_param p;
    p.type = VL_MYSQL_P_NULL;
    p.v.i64 = 0;
    return p;
}
static inline vl_mysql_param vl_mysql_p_int64(int64_t x)
{
    vl_mysql_param p;
    p.type = VL_MYSQL_P_INT64;
    p.v.i64 = x;
    return p;
}
static inline vl_mysql_param vl_mysql_p_uint64(uint64_t x)
{
    vl_mysql_param p;
    p.type = VL_MYSQL_P_UINT64;
    p.v.u64 = x;
    return p;
}
static inline vl_mysql_param vl_mysql_p_double(double x)
{
    vl_mysql_param p;
    p.type = VL_MYSQL_P_DOUBLE;
    p.v.d = x;
    return p;
}
/* A NUL-terminated string (NULL gives SQL NULL). */
static inline vl_mysql_param vl_mysql_p_str(const char *s)
{
    vl_mysql_param p;
    size_t n = 0;
    if (s == NULL)
        return vl_mysql_p_null();
    while (s[n] != '\0')
        n++;
    p.type = VL_MYSQL_P_STRING;
    p.v.str.ptr = s;
    p.v.str.len = n;
    return p;
}
static inline vl_mysql_param vl_mysql_p_blob(const void *b, size_t len)
{
    vl_mysql_param p;
    p.type = VL_MYSQL_P_BLOB;
    p.v.str.ptr = b;
    p.v.str.len = len;
    return p;
}
static inline vl_mysql_param vl_mysql_p_time(int type, vl_mysql_time t)
{
    vl_mysql_param p;
    p.type = type; /* VL_MYSQL_P_DATE, _TIME or _DATETIME */
    p.v.t = t;
    return p;
}

/* Prepares `sql` (or reuses the connection's cached statement for the same
 * SQL text), binds `params[0..n)` and executes it. The SQL and every
 * parameter value are copied before the call returns. The statement cache is
 * per connection, keyed by the exact SQL text, holds the 64 most recently
 * used statements, and dies with the connection (a pool's replacement
 * connection starts with an empty cache; a reset connection drops it too).
 * A statement whose execution failed is dropped from the cache and
 * prepared again next time.
 * Completes with the same vl_mysql_result as a text query: values of the
 * binary protocol are converted to the text protocol's forms (integers in
 * decimal, DATETIME(6) as "YYYY-MM-DD hh:mm:ss.ffffff", FLOAT/DOUBLE in the
 * shortest form that reads back exactly, strings and blobs as bytes), so
 * the accessors behave alike. n must equal the number of '?' markers
 * (VL_EINVAL otherwise, connection unaffected). A statement producing more
 * than one result set (CALL) returns only the first.
 * Returns NULL only when out of memory. */
VL_EXPORT vl_future *vl_mysql_execute(vl_mysql *c, const char *sql, const vl_mysql_param *params,
                                      size_t n);

/* Bulk execution (MariaDB's COM_STMT_BULK_EXECUTE, array binding): runs the
 * prepared statement `sql` once for each of `nrows` rows of `ncols`
 * parameters, every row sent in one round trip. `params` holds
 * nrows * ncols parameters, row after row: row r's column i is
 * params[r * ncols + i]. Each column has one type in every row, except that
 * any cell may be VL_MYSQL_P_NULL. Meant for INSERT, REPLACE, UPDATE and
 * DELETE. The rows go in round trips of at most 4 MiB as the protocol
 * encodes them (most calls need one); each round trip runs as one
 * statement, so under autocommit its rows are all stored or none are. A
 * call whose rows need several round trips is all-or-none only inside a
 * transaction: if one fails, the ones before it stay (and the future fails
 * with that failure). A statement that returns rows (INSERT ... RETURNING)
 * gives them in its result when its rows fit one round trip; one that
 * would need more fails with VL_EINVAL before anything is sent.
 * Everything is copied before the call
 * returns, as for vl_mysql_execute, and the same statement cache is used.
 * Completes with one result: affected rows the sum over all rows, insert_id
 * the first row's AUTO_INCREMENT value. Fails up front (nothing sent) with
 * VL_EINVAL when nrows or ncols is 0, when a column's types differ between
 * rows or when a parameter is bad (the message names row and column), and
 * with VL_EUNSUPPORTED when the server lacks bulk operations (MySQL, or
 * MariaDB before 10.2). Returns NULL only when out of memory. */
VL_EXPORT vl_future *vl_mysql_execute_bulk(vl_mysql *c, const char *sql,
                                           const vl_mysql_param *params, size_t ncols,
                                           size_t nrows);

/* ======================================================================
 * Results
 * ======================================================================
 * One result per statement; a multi-statement call chains them with
 * vl_mysql_result_next(). The whole chain is ONE allocation arena: rows,
 * cells, names and the chained results are never freed one by one. Every
 * pointer read from a result is borrowed and valid until the first result
 * of the chain is freed (with the future, or by vl_mysql_result_free after
 * vl_future_take). */

/* Column types (volley's own numbering, stable). The server reports ENUM
 * and SET columns as strings with a flag; they are given their own types
 * here. JSON is a LONGTEXT alias in MariaDB and reads as VL_MYSQL_BLOB
 * without VL_MYSQL_FLAG_BINARY. */
enum {
    VL_MYSQL_NULL = 0,
    VL_MYSQL_TINY, VL_MYSQL_SHORT, VL_MYSQL_INT24, VL_MYSQL_LONG, VL_MYSQL_LONGLONG,
    VL_MYSQL_DECIMAL, VL_MYSQL_FLOAT, VL_MYSQL_DOUBLE, VL_MYSQL_BIT,
    VL_MYSQL_DATE, VL_MYSQL_TIME, VL_MYSQL_DATETIME, VL_MYSQL_TIMESTAMP, VL_MYSQL_YEAR,
    VL_MYSQL_CHAR,    /* CHAR, BINARY */
    VL_MYSQL_VARCHAR, /* VARCHAR, VARBINARY */
    VL_MYSQL_BLOB,    /* TEXT, BLOB and their sizes, JSON */
    VL_MYSQL_ENUM, VL_MYSQL_SET, VL_MYSQL_GEOMETRY, VL_MYSQL_OTHER
};
#define VL_MYSQL_FLAG_UNSIGNED 1u
#define VL_MYSQL_FLAG_BINARY 2u   /* binary collation: bytes, not text */
#define VL_MYSQL_FLAG_NOT_NULL 4u

/* The result value of a future (borrowed), or NULL when the future has no
 * MySQL result (pending, another backend, or a failure before any I/O). */
VL_EXPORT const vl_mysql_result *vl_future_mysql_result(const vl_future *f);

/* Frees a result taken with vl_future_take (the whole chain). NULL is a no-op.
 * Never call it on a chained (next) result or a stream batch. */
VL_EXPORT void vl_mysql_result_free(vl_mysql_result *r);

/* The next statement's result of a multi-statement call, or NULL. */
VL_EXPORT const vl_mysql_result *vl_mysql_result_next(const vl_mysql_result *r);

/* 1 when the statement produced a result set (even an empty one), 0 for
 * statements that only report counts (INSERT, UPDATE, SET...). */
VL_EXPORT int vl_mysql_result_has_rows(const vl_mysql_result *r);

/* Number of columns of the current result set (0 when it has no rows, as
 * for an INSERT). */
VL_EXPORT size_t vl_mysql_result_columns(const vl_mysql_result *r);
/* Number of rows of the current result set. */
VL_EXPORT size_t vl_mysql_result_rows(const vl_mysql_result *r);
/* Column name (borrowed) or NULL when out of range. */
VL_EXPORT const char *vl_mysql_result_column_name(const vl_mysql_result *r, size_t col);
/* VL_MYSQL_* type, or -1 when out of range. */
VL_EXPORT int vl_mysql_result_column_type(const vl_mysql_result *r, size_t col);
/* VL_MYSQL_FLAG_* bits. */
VL_EXPORT unsigned vl_mysql_result_column_flags(const vl_mysql_result *r, size_t col);
/* Index of the column named `name`, or -1. */
VL_EXPORT long vl_mysql_result_column_index(const vl_mysql_result *r, const char *name);

/* The cell's bytes (binary-safe; always followed by a NUL for convenience)
 * and their count in *len (len may be NULL). SQL NULL returns NULL with
 * *len = 0; an empty string returns "" with *len = 0. Out of range returns
 * NULL. Borrowed: valid while the result is. */
VL_EXPORT const char *vl_mysql_result_value(const vl_mysql_result *r, size_t row, size_t col,
                                            size_t *len);
/* 1 when the cell is SQL NULL (or out of range), 0 otherwise. */
VL_EXPORT int vl_mysql_result_is_null(const vl_mysql_result *r, size_t row, size_t col);
/* Typed reads. Return VL_OK, VL_ESTATE when the cell is NULL, VL_EINVAL when
 * out of range or the text is not a number of that type (or overflows). */
VL_EXPORT int vl_mysql_result_int64(const vl_mysql_result *r, size_t row, size_t col,
                                    int64_t *out);
VL_EXPORT int vl_mysql_result_uint64(const vl_mysql_result *r, size_t row, size_t col,
                                     uint64_t *out);
VL_EXPORT int vl_mysql_result_double(const vl_mysql_result *r, size_t row, size_t col,
                                     double *out);

/* Counters of the statement. For a SELECT, affected rows is the row count. */
VL_EXPORT uint64_t vl_mysql_result_affected_rows(const vl_mysql_result *r);
VL_EXPORT uint64_t vl_mysql_result_insert_id(const vl_mysql_result *r);
VL_EXPORT unsigned vl_mysql_result_warnings(const vl_mysql_result *r);

/* The GTID the statement's commit produced ("domain-server-sequence", as
 * MariaDB's @@last_gtid), borrowed like the result, or NULL when the server
 * did not report one: a read, a failure, a statement inside a transaction
 * not yet committed, or a connection that does not track it. Pooled
 * connections track it (session_track_system_variables); so does a
 * vl_mysql connection whose URL has ?track_gtid=1. Replica routing uses it
 * for read-your-writes (MASTER_GTID_WAIT). */
VL_EXPORT const char *vl_mysql_result_gtid(const vl_mysql_result *r);

/* Error details of a failed future (see "Errors" above): the MySQL errno (0
 * when the failure did not come from the server or Connector/C, or f is
 * NULL) and the 5-character SQLSTATE ("" when none). Borrowed; valid while
 * the future is. The message, naming the endpoint and the statement's verb,
 * is vl_future_error(f); the server's own text stays in it. */
VL_EXPORT unsigned vl_future_mysql_errno(const vl_future *f);
VL_EXPORT const char *vl_future_mysql_sqlstate(const vl_future *f);

/* ======================================================================
 * Pools
 * ======================================================================
 * One pool per endpoint, HikariCP's vocabulary, nginx's keepalive mechanics.
 *
 * The clean-return rule: after each use a connection goes back to the idle
 * set only if it is provably clean: no error, nothing in flight, no open
 * transaction, no changed session state. The pool enables
 * session_track_state_change, session_track_system_variables='*' and
 * session_track_schema on its connections, so the server flags any change
 * (a user variable, a temporary table, USE, SET SESSION...); a connection
 * flagged, or left inside a transaction, is reset first with
 * COM_RESET_CONNECTION (which also rolls back, releases named locks and
 * drops its prepared statements), then gets the URL's database back
 * (COM_INIT_DB; a USE on a URL without a database closes the connection
 * instead, as there is none to go back to) and its connect-time setup (the
 * tracking and init_sql) again before anything else runs on it; if any of
 * that fails it is closed. A connection with an error (lost, client-side
 * deadline, statement still in flight, failed COMMIT or ROLLBACK) is always
 * closed.
 *
 * Named locks (GET_LOCK) set no flag. A statement whose SQL text mentions
 * GET_LOCK marks its connection for a reset, which releases them. A lock
 * taken out of the pool's sight (inside a stored routine or trigger, or
 * through PREPARE of built SQL) is NOT detected: release it
 * (RELEASE_LOCK, RELEASE_ALL_LOCKS) before the statement or transaction that
 * took it ends.
 *
 * Idle connections are reused most-recent-first and watched for read
 * readiness: a server that hangs up (restart, wait_timeout) evicts them.
 * A connection that fails with errno 2006/2013 is closed and replaced on
 * demand; a failing connect puts the pool in backoff: one probe connect at a
 * time, retried after a growing, jittered delay (100 ms doubling to 2 s),
 * never a storm. Requests keep waiting meanwhile, up to acquire_timeout_ms;
 * their VL_ETIMEDOUT message then quotes the last connect error. Nothing
 * that was already sent to the server is retried automatically.
 *
 * Idle pooled connections and the pool's maintenance timer do not keep the
 * loop alive (vl_loop_run returns once no request is pending).
 */
/* Back-pressure, the same model as vl_redis_pool_options: a request that
 * finds no connection free waits, in order, up to acquire_timeout_ms (then
 * VL_ETIMEDOUT; with acquire_timeout_ms 0 it waits for as long as it
 * takes). By default any number may wait (max_waiters SIZE_MAX): the
 * deadline bounds the queue, not a count; a waiting point select costs
 * about 270 bytes with its future. With a smaller max_waiters one more
 * fails at once with VL_EBUSY; with max_waiters 0 nothing waits. The ABI
 * rule of vl_mysql_options applies. */
typedef struct vl_mysql_pool_options {
    size_t struct_size;          /* set by vl_mysql_pool_options_init */
    size_t max_size;             /* open connections at most; 10. More than a
                                  * Redis pool's 8: a MySQL connection runs one
                                  * statement at a time */
    size_t min_idle;             /* opened at once and kept idle when possible; 1 */
    uint64_t acquire_timeout_ms; /* waiting for a connection; 5000. 0 = no limit */
    size_t max_waiters;          /* requests that may wait; SIZE_MAX (no count
                                  * bound: acquire_timeout_ms bounds each
                                  * wait), as aiomysql's pool queues. 0 = none */
    uint64_t connect_timeout_ms; /* 5000 */
    uint64_t idle_timeout_ms;    /* close idle beyond min_idle after this; 600000 */
    uint64_t max_lifetime_ms;    /* retire after this (minus up to 2.5% jitter); 1800000 */
    uint64_t keepalive_ms;       /* ping connections idle this long; 0 = off */
    const char *init_sql;        /* run on every new connection; copied */
} vl_mysql_pool_options;

/* As vl_mysql_options_init_sized; call it as vl_mysql_pool_options_init(&o). */
VL_EXPORT void vl_mysql_pool_options_init_sized(vl_mysql_pool_options *o, size_t struct_size);
#define vl_mysql_pool_options_init(o) vl_mysql_pool_options_init_sized((o), sizeof(*(o)))

/* Makes a pool for `url` (copied; URL parameters apply to every connection,
 * among them read_timeout_ms and the limits, which otherwise have their
 * vl_mysql_options_init defaults; a connection closed by one of them counts
 * in closed_broken).
 * It opens min_idle connections in the background. Returns NULL only when
 * out of memory; a bad URL gives a pool whose every future fails with
 * VL_EINVAL. The caller frees it with
 * vl_mysql_pool_free (or vl_loop_free does). */
VL_EXPORT vl_mysql_pool *vl_mysql_pool_new(vl_loop *loop, const char *url,
                                           const vl_mysql_pool_options *opts);

/* Frees the pool at once: waiting and running futures complete with
 * VL_ECANCELED, connections are closed, open transactions become dead (their
 * later calls fail with VL_ECLOSED; the caller still frees them). Legal from
 * a callback. NULL is a no-op. As with vl_mysql_free, inside the callbacks
 * that vl_loop_free runs after freeing the pool, a second free is a no-op and
 * every request fails with VL_ECLOSED. */
VL_EXPORT void vl_mysql_pool_free(vl_mysql_pool *p);

/* Runs one statement on a pooled connection. When every connection is busy
 * the request waits in a fair FIFO queue: it fails with VL_EBUSY at once if
 * max_waiters are already waiting, and with VL_ETIMEDOUT after
 * acquire_timeout_ms. The result is the same as vl_mysql_query /
 * vl_mysql_execute; the parameters are checked up front the same way (a bad
 * type, or a STRING/BLOB with len > 0 and a NULL ptr, fails with VL_EINVAL
 * before anything is sent). Returns NULL only when out of memory. */
VL_EXPORT vl_future *vl_mysql_pool_query(vl_mysql_pool *p, const char *sql);
VL_EXPORT vl_future *vl_mysql_pool_execute(vl_mysql_pool *p, const char *sql,
                                           const vl_mysql_param *params, size_t n);
/* vl_mysql_execute_bulk on a pooled connection, queued like the others. Its
 * rows are checked when the call is made: a bad shape, parameter or column
 * type fails with VL_EINVAL (row and column named) before it waits or
 * anything is sent. Everything is copied before the call returns. */
VL_EXPORT vl_future *vl_mysql_pool_execute_bulk(vl_mysql_pool *p, const char *sql,
                                                const vl_mysql_param *params, size_t ncols,
                                                size_t nrows);

/* Readiness (a warm-up barrier), the same as vl_redis_pool_ready: completes
 * with VL_OK once min_idle connections are open (min_idle 0: at once), or
 * with VL_ECONN and the last connect error once a connect failed and none
 * is open. A pool with a bad URL fails it with the URL's status. Freeing
 * the pool completes it with VL_ECANCELED. Its callback runs from the loop
 * (rule 2); waiting keeps vl_loop_run running. No value; the caller owns
 * the future. NULL only when out of memory or p is NULL. */
VL_EXPORT vl_future *vl_mysql_pool_ready(vl_mysql_pool *p);

/* Fills `out` (prepared with vl_pool_stats_init, volley/common.h) with a
 * snapshot of the pool; only the fields within out->struct_size are
 * written. For a MySQL pool, `busy` counts connections running a statement
 * or being reset, `leased` the open transactions, `pending` the statements
 * running, `closed_dirty` connections closed on release because they were
 * not provably clean (a statement still in flight, a failed COMMIT or
 * ROLLBACK, a failed reset), `closed_broken` the ones lost or hung up.
 * Returns VL_OK, or VL_EINVAL when p or out is NULL or out->struct_size is
 * unknown (nothing written). */
VL_EXPORT int vl_mysql_pool_stats_get(const vl_mysql_pool *p, vl_pool_stats *out);

/* ---- Transactions: a lease of one pooled connection ----
 *
 * vl_mysql_pool_begin acquires a connection (waiting like a query) and runs
 * START TRANSACTION. Its future's value is the transaction: read it with
 * vl_future_mysql_tx and keep it with vl_future_take; a transaction nobody
 * took is rolled back when its future is freed. Statements inside run in
 * order on the leased connection. vl_mysql_tx_commit / _rollback end it and
 * consume the handle (the connection goes back to the pool if clean).
 * vl_mysql_tx_free releases it without committing: the connection is reset
 * (rolling the transaction back) or closed. A connection lost mid-transaction
 * fails the statement with VL_ECONN, and every later call on the transaction
 * with VL_ECLOSED: it is never silently reconnected. */
VL_EXPORT vl_future *vl_mysql_pool_begin(vl_mysql_pool *p);
VL_EXPORT vl_mysql_tx *vl_future_mysql_tx(const vl_future *f);
VL_EXPORT vl_future *vl_mysql_tx_query(vl_mysql_tx *tx, const char *sql);
VL_EXPORT vl_future *vl_mysql_tx_execute(vl_mysql_tx *tx, const char *sql,
                                         const vl_mysql_param *params, size_t n);
/* COMMIT; consumes tx. If the commit fails the future fails with the error
 * (the server's, or VL_ECONN) and the connection is closed, never reused:
 * the transaction's outcome is then unknown to the caller. */
VL_EXPORT vl_future *vl_mysql_tx_commit(vl_mysql_tx *tx);
/* ROLLBACK; consumes tx. A failed rollback closes the connection too. */
VL_EXPORT vl_future *vl_mysql_tx_rollback(vl_mysql_tx *tx);
/* Releases tx without committing (rolls back). NULL is a no-op. */
VL_EXPORT void vl_mysql_tx_free(vl_mysql_tx *tx);

#ifdef __cplusplus
}
#endif
#endif
