/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/fuzz/fuzz_redis_reply.c - libFuzzer target for the Redis reply path:
 * the RESP framer (lib/redis_resp.c) and the parser that builds volley's
 * one-allocation replies from what it accepted (lib/redis_reply.c), fed the
 * way a connection feeds them, with hiredis's reader as the oracle.
 *
 * Input: byte 0 picks the limits (the defaults, or small ones so that every
 * limit is reached), byte 1 the chunk size the bytes arrive in and how many
 * replies are "owed" at a time; the rest is what the server sends.
 * Checked for every input:
 * - chunking never changes the outcome: the framer accepts the same replies
 *   and refuses the same streams whether the bytes come at once or in
 *   pieces;
 * - whatever the framer accepts, hiredis's reader parses without an error
 *   into exactly as many replies, and none beyond: the reader must never see
 *   a reply the framer did not count (that is what keeps a reply nobody
 *   asked for away from hiredis's assert);
 * - no accepted reply breaks a limit (bulk length, elements per array,
 *   nesting depth);
 * - volley's reply, parsed from the bytes of each reply the framer
 *   completed into one block of the size the framer measured, equals the
 *   tree hiredis's own reader builds from them, node by node, and its nodes
 *   and strings add up to exactly that measure; nothing leaks (a counting
 *   allocator), and a failed allocation gives no reply for that one reply
 *   and nothing else.
 */
#include "redis_internal.h"
#include "fuzz_alloc.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_redis_reply: %s\n", what);
        abort();
    }
}

/* The copy `v` is the hiredis reply `r`, within the limits at `depth`. */
static void same(const vl_redis_reply *v, const redisReply *r, const vl__resp_limits *lim,
                 unsigned depth)
{
    size_t i, len;
    const char *s;

    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        check(vl_redis_reply_type(v) == (r->type == REDIS_REPLY_STRING   ? VL_REDIS_STRING
                                         : r->type == REDIS_REPLY_STATUS ? VL_REDIS_STATUS
                                                                         : VL_REDIS_ERROR),
              "string type");
        s = vl_redis_reply_str(v, &len);
        check(s != NULL && len == r->len && memcmp(s, r->str, len) == 0 && s[len] == '\0',
              "string bytes");
        if (r->type == REDIS_REPLY_STRING && lim->max_bulk_len != 0)
            check(r->len <= lim->max_bulk_len, "bulk over max_bulk_len accepted");
        break;
    case REDIS_REPLY_INTEGER:
        {
            long long iv = 0;
            check(vl_redis_reply_type(v) == VL_REDIS_INTEGER &&
                      vl_redis_reply_integer(v, &iv) == VL_OK && iv == r->integer,
                  "integer");
        }
        break;
    case REDIS_REPLY_NIL:
        check(vl_redis_reply_type(v) == VL_REDIS_NIL, "nil");
        break;
    case REDIS_REPLY_ARRAY:
        check(depth < lim->max_depth, "array deeper than max_depth accepted");
        if (lim->max_elements != 0)
            check(r->elements <= lim->max_elements, "array over max_elements accepted");
        check(vl_redis_reply_type(v) == VL_REDIS_ARRAY && vl_redis_reply_count(v) == r->elements,
              "array count");
        check(vl_redis_reply_element(v, r->elements) == NULL, "element past the end");
        for (i = 0; i < r->elements; i++)
            same(vl_redis_reply_element(v, i), r->element[i], lim, depth + 1);
        break;
    default:
        check(0, "unknown hiredis type");
    }
}

/* Scans `in` in pieces of `chunk` bytes, `owed` replies at a time (0: no
 * bound), as a connection does. Returns the bytes accepted, the replies in
 * *n, and leaves the framer in *p. */
static size_t frame(vl__resp *p, const vl__resp_limits *lim, const char *in, size_t len,
                    size_t chunk, size_t owed, size_t *n)
{
    size_t pos = 0, got, used, total = 0;

    vl__resp_init(p, lim);
    *n = 0;
    while (pos < len && !p->error) {
        size_t piece = len - pos < chunk ? len - pos : chunk;
        size_t off = 0;
        while (off < piece && !p->error) {
            used = vl__resp_scan(p, in + pos + off, piece - off, owed != 0 ? owed : (size_t)-1,
                                 &got);
            off += used;
            total += used;
            *n += got;
            if (got == 0)
                break;
        }
        if (p->error || off < piece)
            break;
        pos += piece;
    }
    return total;
}

/* Nodes and string bytes (with their NULs) of a built reply. */
static void measure(const vl_redis_reply *v, uint64_t *nodes, uint64_t *text)
{
    size_t i, n = vl_redis_reply_count(v), len;

    if (vl_redis_reply_str(v, &len) != NULL)
        *text += len + 1;
    *nodes += n;
    for (i = 0; i < n; i++)
        measure(vl_redis_reply_element(v, i), nodes, text);
}

/* Parses one reply two ways: hiredis's own tree from `ref`, and volley's
 * one-block reply from the same bytes (failing its allocation when `oom`),
 * and checks they agree and that the framer's measure was exact. */
static void one_reply(redisReader *ref, const char *buf, size_t len, const vl__resp *p,
                      const vl__resp_limits *lim, int oom)
{
    void *r1 = NULL;
    vl_redis_reply *v;
    uint64_t nodes = 1, text = 0;

    check(redisReaderGetReply(ref, &r1) == REDIS_OK && r1 != NULL,
          "hiredis found no reply where the framer completed one");
    check(lim->max_reply_mem == 0 ||
              p->done_nodes * vl__redis_reply_node_size() + p->done_text <= lim->max_reply_mem,
          "reply over max_reply_mem accepted");
    fz_calls = 0;
    fz_fail_at = oom ? 1 : 0;
    v = vl__reply_parse(buf, len, p->done_nodes, p->done_text);
    fz_fail_at = 0;
    if (oom) {
        check(v == NULL, "a failed allocation still gave a reply");
    } else {
        check(v != NULL, "no memory without a failure");
        same(v, r1, lim, 0);
        measure(v, &nodes, &text);
        check(nodes == p->done_nodes && text == p->done_text,
              "the framer's measure of the reply was not exact");
        vl_redis_reply_free(v);
    }
    freeReplyObject(r1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vl__resp_limits lim;
    vl__resp whole, pieces, p;
    size_t nwhole, npieces, used, used2, chunk, owed, pos, got, count = 0;
    const char *in;
    redisReader *ref;
    void *reply;
    int oom_every;

    if (size < 2)
        return 0;
    fz_alloc_reset(0);
    if (data[0] & 1) {
        lim.max_bulk_len = 1u + (data[0] >> 1 & 7) * 3;
        lim.max_elements = 1u + (data[0] >> 4 & 3) * 2;
        lim.max_depth = 1u + (data[0] >> 6);
        lim.max_reply_bytes = 8u + (unsigned)(data[0] >> 1) * 4;
        lim.max_reply_mem = 40u + (unsigned)(data[1] >> 4) * 24;
    } else {
        vl_redis_options o;
        vl_redis_options_init(&o);
        lim.max_bulk_len = o.max_bulk_len;
        lim.max_elements = o.max_elements;
        lim.max_depth = o.max_depth;
        lim.max_reply_bytes = o.max_reply_bytes;
        lim.max_reply_mem = o.max_reply_mem;
    }
    chunk = 1u + (data[1] & 15);
    owed = data[1] >> 4;
    oom_every = (data[0] & 6) == 6 ? 3 : 0;
    in = (const char *)data + 2;
    size -= 2;

    used = frame(&whole, &lim, in, size, size > 0 ? size : 1, 0, &nwhole);
    used2 = frame(&pieces, &lim, in, size, chunk, owed, &npieces);
    if (owed == 0) {
        /* On an error the bytes of the broken reply that came in earlier
         * pieces were accepted (the connection is closed anyway); the
         * replies before it and the verdict must not change. */
        check(nwhole == npieces && whole.error == pieces.error, "chunking changed the outcome");
        check(whole.error || used == used2, "chunking changed the bytes accepted");
    } else {
        /* Stopping at owed replies is a prefix of the whole answer. */
        check(used2 <= used || whole.error, "owed scan went further");
    }
    if (whole.error)
        check(whole.msg[0] != '\0', "an error without a message");

    /* Reply by reply, as a connection feeds them: hiredis's own reader and
     * one building volley's replies see the same bytes. */
    ref = redisReaderCreate();
    check(ref != NULL, "no reader");
    vl__resp_init(&p, &lim);
    pos = 0;
    while (pos < size) {
        used = vl__resp_scan(&p, in + pos, size - pos, 1, &got);
        check(redisReaderFeed(ref, in + pos, used) == REDIS_OK, "feed");
        if (got == 1) {
            count++;
            one_reply(ref, in + pos, used, &p, &lim, oom_every != 0 && count % oom_every == 0);
        }
        pos += used;
        if (p.error || got == 0)
            break;
    }
    check(count == nwhole, "one reply at a time found another number of replies");
    /* Nothing beyond what the framer counted: a partial reply stays one. */
    check(redisReaderGetReply(ref, &reply) == REDIS_OK && reply == NULL,
          "hiredis found a reply the framer did not count");
    check(ref->err == 0, "hiredis refused what the framer accepted");
    redisReaderFree(ref);
    check(fz_live == 0, "leak");
    return 0;
}
