/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_resp.c - volley's own RESP2 framer: where each reply ends, and
 * whether it stays within the limits, before any reply is built from it.
 *
 * Why. A reader that trusts the server (hiredis 0.14's does) lets
 * "*777777770\r\n" calloc 6 GB for the element pointers and a bulk header
 * buffer any length. The connection runs every byte through this framer
 * first: it knows where each top-level reply ends, which lets the
 * connection take exactly the replies commands are owed and no more, and it
 * refuses a reply over a limit as soon as the header that breaks it has
 * been read.
 *
 * Strictness. Whatever the framer accepts, lib/redis_reply.c's parser and
 * hiredis's reader (the fuzz oracle) must parse to the same replies without
 * an error (tests/fuzz/fuzz_redis_reply.c checks that): numbers follow hiredis's string2ll (no '+', no leading zero, no
 * "-0", in range), lengths below -1 are refused, arrays nest at most
 * VL__RESP_DEPTH_MAX deep (hiredis refuses an array inside eight others,
 * even an empty one). The framer is stricter in one place: a bulk string
 * must end in "\r\n", where hiredis skips any two bytes.
 *
 * Memory. A reply is built as one block: a node per item and its strings
 * (lib/redis_reply.c). "+\r\n" is 3 bytes on the wire and a whole node in
 * memory, so max_reply_bytes alone would let 1 GiB of wire build 14 GB.
 * max_reply_mem bounds the block: an array header counts the nodes of all
 * its elements at once, so "*16000000\r\n" is refused before any element
 * arrives when they cannot fit.
 *
 * Cost. Each byte is looked at once; a bulk string's payload is skipped by
 * arithmetic and a status line is searched with memchr. A simple reply
 * that is whole in the buffer (the answer to GET, INCR, SET) is checked in
 * one go (fast_reply) rather than byte by byte. Nothing allocates.
 */
#include "redis_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum {
    ST_TYPE = 0, /* the type byte of the next item */
    ST_LINE,     /* status or error text, up to "\r\n" */
    ST_LINE_CR,  /* in that text, just after a '\r' */
    ST_NUM,      /* the digits of an integer, bulk length or element count */
    ST_NUM_LF,   /* the '\n' after those digits */
    ST_BULK,     /* bulk payload bytes */
    ST_BULK_CR,  /* the '\r' after the payload */
    ST_BULK_LF   /* the '\n' after it */
};

void vl__resp_set_limits(vl__resp *p, const vl__resp_limits *lim)
{
    memset(&p->lim, 0, sizeof(p->lim));
    if (lim != NULL)
        p->lim = *lim;
    if (p->lim.max_depth == 0 || p->lim.max_depth > VL__RESP_DEPTH_MAX)
        p->lim.max_depth = VL__RESP_DEPTH_MAX;
    p->node_size = vl__redis_reply_node_size();
}

void vl__resp_init(vl__resp *p, const vl__resp_limits *lim)
{
    memset(p, 0, sizeof(*p));
    vl__resp_set_limits(p, lim);
}

static int fail(vl__resp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(vl__resp *p, const char *fmt, ...)
{
    va_list ap;

    p->error = 1;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof(p->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* 1 when the block of the reply being read (as far as it is known) would
 * not fit in max_reply_mem. No overflow: text and nodes stay far below
 * 2^64 while each step is checked. */
static int mem_over(const vl__resp *p)
{
    uint64_t max = p->lim.max_reply_mem;

    return max != 0 && (p->text > max || p->nodes > (max - p->text) / p->node_size);
}

static int mem_fail(vl__resp *p, const char *what, uint64_t n)
{
    return fail(p, "%s %llu%s takes the reply past max_reply_mem %llu (%llu bytes per item)",
                what, (unsigned long long)n, what[0] == 'a' ? " elements" : " bytes",
                (unsigned long long)p->lim.max_reply_mem, (unsigned long long)p->node_size);
}

static int mem_fail_reply(vl__resp *p)
{
    return fail(p, "reply of %llu+ bytes in memory exceeds max_reply_mem %llu",
                (unsigned long long)(p->nodes * p->node_size + p->text),
                (unsigned long long)p->lim.max_reply_mem);
}

static const char *type_name(int type)
{
    return type == ':' ? "integer" : type == '$' ? "bulk length" : "array length";
}

/* One more byte of a number, with hiredis's rules. Returns 0, -1 when
 * malformed, -2 when over a limit (the caller says which). */
static int num_byte(vl__resp *p, unsigned char ch)
{
    uint64_t d, cap;

    if (ch == '-' && p->ndig == 0 && !p->neg) {
        p->neg = 1;
        return 0;
    }
    if (ch < '0' || ch > '9')
        return fail(p, "malformed %s (byte 0x%02x)", type_name(p->type), ch);
    if (p->ndig > 0 && p->num == 0)
        return fail(p, "malformed %s (leading zero)", type_name(p->type));
    d = (uint64_t)(ch - '0');
    if (p->neg && p->ndig == 0 && d == 0)
        return fail(p, "malformed %s (-0)", type_name(p->type));
    /* Negative lengths other than -1 are refused at the '\n'; the cap keeps
     * the digits from overflowing meanwhile. */
    cap = p->type == ':' ? (p->neg ? (uint64_t)LLONG_MAX + 1 : (uint64_t)LLONG_MAX)
          : p->neg       ? 1
                         : (uint64_t)LLONG_MAX;
    if (p->num > (cap - d) / 10)
        return fail(p, "%s out of range", type_name(p->type));
    p->num = p->num * 10 + d;
    p->ndig++;
    if (p->neg)
        return 0;
    /* Refuse a huge length while its digits arrive: "$2000000000" is
     * refused before its "\r\n", and a runaway number stops early. */
    if (p->type == '$' && p->lim.max_bulk_len != 0 && p->num > p->lim.max_bulk_len)
        return -2;
    if (p->type == '*' &&
        ((p->lim.max_elements != 0 && p->num > p->lim.max_elements) || p->num > INT_MAX))
        return -2;
    return 0;
}

static int limit_hit(vl__resp *p)
{
    if (p->type == '$')
        return fail(p, "bulk string of %llu+ bytes exceeds max_bulk_len %llu",
                    (unsigned long long)p->num, (unsigned long long)p->lim.max_bulk_len);
    if (p->lim.max_elements != 0 && p->num > p->lim.max_elements)
        return fail(p, "array of %llu+ elements exceeds max_elements %llu",
                    (unsigned long long)p->num, (unsigned long long)p->lim.max_elements);
    return fail(p, "array of %llu+ elements exceeds hiredis's limit of %d",
                (unsigned long long)p->num, INT_MAX);
}

/* An item (a scalar or a whole array) is complete: pop finished arrays.
 * Returns 1 when that completed the top-level reply. */
static int item_done(vl__resp *p)
{
    p->state = ST_TYPE;
    while (p->depth > 0) {
        if (--p->left[p->depth - 1] > 0)
            return 0;
        p->depth--;
    }
    return 1;
}

/* The number in p->num is complete (its "\r\n" was read). Returns 1 when the
 * top-level reply is complete, 0 to go on, -1 on error. */
static int num_done(vl__resp *p)
{
    if (p->ndig == 0)
        return fail(p, "malformed %s (no digits)", type_name(p->type));
    if (p->type == ':')
        return item_done(p);
    if (p->neg) {
        if (p->num != 1)
            return fail(p, "malformed %s (negative)", type_name(p->type));
        return item_done(p); /* $-1 and *-1: nil */
    }
    if (p->type == '$') {
        if (p->lim.max_reply_bytes != 0 && p->reply_bytes + p->num > p->lim.max_reply_bytes)
            return fail(p, "bulk string of %llu bytes takes the reply past max_reply_bytes %llu",
                        (unsigned long long)p->num, (unsigned long long)p->lim.max_reply_bytes);
        p->bulk_left = p->num;
        p->text += p->num + 1;
        if (mem_over(p))
            return mem_fail(p, "bulk string of", p->num);
        p->state = p->num > 0 ? ST_BULK : ST_BULK_CR;
        return 0;
    }
    if (p->num == 0)
        return item_done(p);
    p->nodes += p->num; /* every element will be a node */
    if (mem_over(p))
        return mem_fail(p, "array of", p->num);
    p->left[p->depth++] = p->num;
    p->state = ST_TYPE;
    return 0;
}

/* The common case whole: a bulk string ("$5\r\nhello\r\n"), an integer
 * or a short status line at the start of a reply, all of it in s[0..end).
 * Returns its length once checked like the byte-by-byte path would check
 * it, or 0 to leave it to that path (anything else: a nil, an error line, a
 * number with a sign or a leading zero, a limit broken, a reply cut short),
 * which then decides from the same byte. */
static size_t fast_reply(vl__resp *p, const unsigned char *s, const unsigned char *end)
{
    const unsigned char *q = s + 1;
    uint64_t num = 0, text;
    size_t n;

    if (end - s < 4)
        return 0;
    if (*s == '+') {
        const unsigned char *cr = memchr(q, '\r', (size_t)(end - q));
        if (cr == NULL || cr + 1 >= end || cr[1] != '\n')
            return 0;
        text = (uint64_t)(cr - q) + 1;
        n = (size_t)(cr + 2 - s);
    } else if (*s == '$' || *s == ':') {
        if (*q < '1' || *q > '9')
            return 0; /* "0", "-1", a sign: the slow path */
        while (q < end && *q >= '0' && *q <= '9' && q - s < 19)
            num = num * 10 + (uint64_t)(*q++ - '0');
        if (end - q < 2 || q[0] != '\r' || q[1] != '\n')
            return 0;
        q += 2;
        if (*s == ':') {
            text = 0;
            n = (size_t)(q - s);
        } else {
            if ((p->lim.max_bulk_len != 0 && num > p->lim.max_bulk_len) ||
                (uint64_t)(end - q) < num + 2 || q[num] != '\r' || q[num + 1] != '\n')
                return 0;
            text = num + 1;
            n = (size_t)(q - s) + (size_t)num + 2;
        }
    } else {
        return 0;
    }
    if ((p->lim.max_reply_bytes != 0 && n > p->lim.max_reply_bytes) ||
        (p->lim.max_reply_mem != 0 &&
         (text > p->lim.max_reply_mem || p->node_size > p->lim.max_reply_mem - text)))
        return 0;
    p->nodes = p->done_nodes = 1;
    p->text = p->done_text = text;
    p->reply_bytes = 0;
    return n;
}

size_t vl__resp_scan(vl__resp *p, const char *buf, size_t len, size_t max_replies,
                     size_t *replies)
{
    const unsigned char *s = (const unsigned char *)buf, *end = s + len, *start = s;
    const unsigned char *q, *last = s; /* the end of the last complete reply */
    size_t done = 0;
    int rc;

    *replies = 0;
    if (p->error)
        return 0;
    while (s < end && done < max_replies) {
        switch (p->state) {
        case ST_TYPE:
            if (p->depth == 0) {
                size_t n = fast_reply(p, s, end);
                if (n > 0) {
                    s += n;
                    done++;
                    start = last = s;
                    continue;
                }
                p->nodes = 1; /* a new reply: its root */
                p->text = 0;
            }
            if (*s == '*' && p->depth >= p->lim.max_depth) {
                fail(p, "arrays nested deeper than max_depth %u", p->lim.max_depth);
                goto out;
            }
            p->type = *s++;
            p->num = 0;
            p->ndig = 0;
            p->neg = 0;
            if (p->type == '+' || p->type == '-') {
                p->state = ST_LINE;
            } else if (p->type == ':' || p->type == '$' || p->type == '*') {
                p->state = ST_NUM;
            } else {
                fail(p, "bad reply type byte 0x%02x", p->type);
                goto out;
            }
            break;
        case ST_LINE:
            q = memchr(s, '\r', (size_t)(end - s));
            if (q == NULL) {
                p->text += (uint64_t)(end - s);
                s = end;
            } else {
                p->text += (uint64_t)(q - s);
                s = q + 1;
                p->state = ST_LINE_CR;
            }
            if (mem_over(p)) {
                mem_fail_reply(p);
                goto out;
            }
            break;
        case ST_LINE_CR:
            if (*s == '\n') {
                s++;
                p->text++; /* its NUL */
                if (item_done(p))
                    goto reply;
            } else if (*s == '\r') {
                p->text++; /* the '\r' before was text */
                s++;
            } else {
                p->text++;
                p->state = ST_LINE; /* a lone '\r' is text, as in hiredis */
            }
            break;
        case ST_NUM:
            if (*s == '\r') {
                s++;
                p->state = ST_NUM_LF;
                break;
            }
            rc = num_byte(p, *s++);
            if (rc == -2)
                limit_hit(p);
            if (rc < 0)
                goto out;
            break;
        case ST_NUM_LF:
            if (*s++ != '\n') {
                fail(p, "malformed %s (\\r without \\n)", type_name(p->type));
                goto out;
            }
            p->reply_bytes += (uint64_t)(s - start); /* num_done checks it */
            start = s;
            rc = num_done(p);
            if (rc < 0)
                goto out;
            if (rc == 1)
                goto reply;
            break;
        case ST_BULK: {
            size_t n = (size_t)(end - s);
            if ((uint64_t)n > p->bulk_left)
                n = (size_t)p->bulk_left;
            s += n;
            p->bulk_left -= n;
            if (p->bulk_left == 0)
                p->state = ST_BULK_CR;
            break;
        }
        case ST_BULK_CR:
            if (*s++ != '\r') {
                fail(p, "bulk string longer than its length");
                goto out;
            }
            p->state = ST_BULK_LF;
            break;
        case ST_BULK_LF:
            if (*s++ != '\n') {
                fail(p, "bulk string not ended by \\r\\n");
                goto out;
            }
            if (item_done(p))
                goto reply;
            break;
        }
        continue;
    reply:
        p->reply_bytes += (uint64_t)(s - start);
        if (p->lim.max_reply_bytes != 0 && p->reply_bytes > p->lim.max_reply_bytes)
            goto too_big;
        if (mem_over(p)) { /* the NULs of status lines */
            mem_fail_reply(p);
            goto out;
        }
        done++;
        p->reply_bytes = 0;
        p->done_nodes = p->nodes;
        p->done_text = p->text;
        start = last = s;
    }
    p->reply_bytes += (uint64_t)(s - start);
    start = s;
    if (p->lim.max_reply_bytes != 0 && p->reply_bytes > p->lim.max_reply_bytes)
        goto too_big;
    *replies = done;
    return (size_t)(s - (const unsigned char *)buf);
too_big:
    fail(p, "reply of %llu+ bytes exceeds max_reply_bytes %llu",
         (unsigned long long)p->reply_bytes, (unsigned long long)p->lim.max_reply_bytes);
out:
    /* The replies completed before the error are good: hand those over. */
    *replies = done;
    return (size_t)(last - (const unsigned char *)buf);
}

int vl__resp_mid_reply(const vl__resp *p)
{
    return p->state != ST_TYPE || p->depth > 0;
}
