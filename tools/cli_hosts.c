/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/cli_hosts.c - host lists for the volley CLI: ranges, files, and the
 * compressed form used when grouping ("127.0.0.1:[7000-7002,7005]").
 *
 * Uses only the C library: the CLI talks to volley through its public API.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_hosts_free(cli_hosts *h)
{
    size_t i;

    for (i = 0; i < h->n; i++)
        free(h->v[i]);
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

static int push(cli_hosts *h, const char *s, size_t len)
{
    char *copy;

    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        char **v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    h->v[h->n++] = copy;
    return 0;
}

/* A bracket holds a range list when it is only digits, ',' and '-'
 * ("[7000-7005]", "[1,3,5-7]"); "[::1]" is an IPv6 literal and stays. */
static int is_range(const char *s, size_t n)
{
    size_t i;
    int digit = 0;

    for (i = 0; i < n; i++) {
        if (isdigit((unsigned char)s[i]))
            digit = 1;
        else if (s[i] != ',' && s[i] != '-')
            return 0;
    }
    return digit;
}

#define CLI_MAX_HOSTS 100000
#define CLI_MAX_RANGE_VALUE 999999999ul

/* Where the secret-free part of host item s[0, n) lies. The userinfo ends
 * at the last '@' before the query, as in the library's URL parser, and the
 * query may hold "password=": ranges expand only in between (host, port,
 * path), and messages quote only that. `*head` is where the part starts
 * (after "scheme://" and "user:password@"), `*scheme` the length of
 * "scheme://" (0 without one), `*tail` the length of "?query". */
static void host_part(const char *s, size_t n, size_t *scheme, size_t *head, size_t *tail)
{
    const char *end = s + n, *sep = NULL, *auth = s, *q, *at = NULL, *p;

    for (p = s; p + 3 <= end; p++)
        if (memcmp(p, "://", 3) == 0) {
            sep = p;
            break;
        }
    if (sep != NULL)
        auth = sep + 3;
    q = memchr(auth, '?', (size_t)(end - auth));
    if (q == NULL)
        q = end;
    if (auth < q && *auth != '/')
        for (p = auth; p < q; p++)
            if (*p == '@')
                at = p;
    *scheme = (size_t)(auth - s);
    *head = at != NULL ? (size_t)(at + 1 - s) : *scheme;
    *tail = (size_t)(end - q);
}

/* "<what> in host 'redis://h:[1-'": the scheme and the host part only,
 * never the userinfo or the query. A '@' in the query means the userinfo
 * may have been cut short at a raw '?', so nothing is quoted then. */
static void host_error(char *err, size_t errlen, const char *what, const char *s)
{
    size_t n = strlen(s), scheme, head, tail;

    host_part(s, n, &scheme, &head, &tail);
    if (memchr(s + n - tail, '@', tail) != NULL)
        snprintf(err, errlen, "%s in a host (not shown: it may hold a password)", what);
    else
        snprintf(err, errlen, "%s in host '%.*s%.*s'", what, (int)scheme, s,
                 (int)(n - tail - head), s + head);
}

/* Expands the first range in the host part of `s`, s[head, strlen(s) -
 * tail), and recursively the rest; the userinfo and query are never
 * expanded, so "[1-2]" in a password stays as typed. */
static int expand(cli_hosts *h, const char *s, size_t head, size_t tail, char *err,
                  size_t errlen)
{
    const char *lb = s + head, *rb = NULL, *end = s + strlen(s) - tail;

    while ((lb = memchr(lb, '[', (size_t)(end - lb))) != NULL) {
        rb = memchr(lb, ']', (size_t)(end - lb));
        if (rb == NULL) {
            host_error(err, errlen, "unclosed '['", s);
            return -1;
        }
        if (is_range(lb + 1, (size_t)(rb - lb - 1)))
            break;
        lb = rb + 1;
    }
    if (lb == NULL)
        return push(h, s, strlen(s)) == 0 ? 0 : (snprintf(err, errlen, "out of memory"), -1);
    {
        const char *p = lb + 1;
        size_t pre = (size_t)(lb - s);
        while (p < rb) {
            char *endp;
            unsigned long a, b, v;
            int width = 0;
            const char *q = p;
            while (q < rb && isdigit((unsigned char)*q)) {
                q++;
                width++;
            }
            /* strtoul would take "-1" and wrap: only digits are allowed. */
            errno = 0;
            a = isdigit((unsigned char)*p) ? strtoul(p, &endp, 10) : (endp = (char *)p, 0);
            if (endp == p || errno != 0 || a > CLI_MAX_RANGE_VALUE) {
                host_error(err, errlen, "bad range", s);
                return -1;
            }
            b = a;
            if (*endp == '-') {
                const char *bs = endp + 1;
                b = isdigit((unsigned char)*bs) ? strtoul(bs, &endp, 10) : (endp = (char *)bs, 0);
                if (endp == bs || errno != 0 || b < a || b > CLI_MAX_RANGE_VALUE) {
                    host_error(err, errlen, "bad range", s);
                    return -1;
                }
            }
            if (endp != rb && *endp != ',') {
                host_error(err, errlen, "bad range", s);
                return -1;
            }
            if (b - a >= CLI_MAX_HOSTS || h->n + (b - a) >= CLI_MAX_HOSTS) {
                host_error(err, errlen, "too large a range", s);
                return -1;
            }
            for (v = a; v <= b; v++) {
                char buf[4096];
                /* Keep zero padding: "[01-03]" gives 01, 02, 03. */
                int pad = (p[0] == '0' && width > 1) ? width : 0;
                int len = snprintf(buf, sizeof(buf), "%.*s%0*lu%s", (int)pre, s, pad, v, rb + 1);
                if (len < 0 || (size_t)len >= sizeof(buf)) {
                    snprintf(err, errlen, "host too long");
                    return -1;
                }
                if (expand(h, buf, head, tail, err, errlen) != 0)
                    return -1;
                if (h->n > CLI_MAX_HOSTS) {
                    snprintf(err, errlen, "more than %d hosts", CLI_MAX_HOSTS);
                    return -1;
                }
            }
            p = *endp == ',' ? endp + 1 : endp;
        }
    }
    return 0;
}

/* The end of the host item that starts at p: the next ',' that is not
 * inside a range ("h:[1,3]"). A '[' that opens no range (IPv6, or one
 * typed in a password) does not hide the commas after it. */
static const char *item_end(const char *p)
{
    while (*p != '\0' && *p != ',') {
        if (*p == '[') {
            const char *rb = strchr(p, ']');
            if (rb != NULL && is_range(p + 1, (size_t)(rb - p - 1))) {
                p = rb + 1;
                continue;
            }
        }
        p++;
    }
    return p;
}

/* Finds the next host item at or after *p: sets *start and *n to it without
 * the white space around it, and *p past it and its comma. Returns 0 at
 * the end of the list. */
static int next_item(const char **p, const char **start, size_t *n)
{
    const char *s = *p, *q;

    if (*s == '\0')
        return 0;
    q = item_end(s);
    *p = *q == ',' ? q + 1 : q;
    while (s < q && isspace((unsigned char)*s))
        s++;
    while (q > s && isspace((unsigned char)q[-1]))
        q--;
    *start = s;
    *n = (size_t)(q - s);
    return 1;
}

int cli_hosts_add_list(cli_hosts *h, const char *list, char *err, size_t errlen)
{
    const char *p = list, *s;
    size_t n;

    while (next_item(&p, &s, &n)) {
        char item[4096];
        size_t scheme, head, tail;

        if (n >= sizeof(item)) {
            snprintf(err, errlen, "host too long");
            return -1;
        }
        if (n == 0)
            continue;
        memcpy(item, s, n);
        item[n] = '\0';
        host_part(item, n, &scheme, &head, &tail);
        if (expand(h, item, head, tail, err, errlen) != 0)
            return -1;
    }
    return 0;
}

void cli_hosts_scrub(char *list)
{
    const char *p = list, *s;
    size_t n;

    while (next_item(&p, &s, &n)) {
        char *item = list + (s - list), *end = item + n;
        size_t scheme, head, tail;

        host_part(item, n, &scheme, &head, &tail);
        if (head > scheme) {
            /* "user:password@": the password runs from the first ':'. */
            char *colon = memchr(item + scheme, ':', head - 1 - scheme);
            if (colon != NULL)
                memset(colon + 1, 'x', (size_t)(item + head - 1 - (colon + 1)));
        }
        if (tail > 0) {
            /* "?k=v&password=secret&k2=v2" */
            char *k = end - tail + 1;
            while (k < end) {
                char *amp = memchr(k, '&', (size_t)(end - k));
                char *kend = amp != NULL ? amp : end;
                if ((size_t)(kend - k) > 9 && strncmp(k, "password=", 9) == 0)
                    memset(k + 9, 'x', (size_t)(kend - k - 9));
                k = kend + (amp != NULL);
            }
        }
    }
}

int cli_hosts_add_file(cli_hosts *h, const char *path, char *err, size_t errlen)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char line[8192];
    int lineno = 0;

    if (f == NULL) {
        snprintf(err, errlen, "cannot open hosts file '%s': %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *hash = line;
        lineno++;
        /* '#' starts a comment at the start of a line or after white space;
         * elsewhere it may be part of a URL (an escaped password). */
        while ((hash = strchr(hash, '#')) != NULL) {
            if (hash == line || isspace((unsigned char)hash[-1])) {
                *hash = '\0';
                break;
            }
            hash++;
        }
        if (cli_hosts_add_list(h, line, err, errlen) != 0) {
            char tmp[256];
            snprintf(tmp, sizeof(tmp), "%s", err);
            snprintf(err, errlen, "%s:%d: %s", path, lineno, tmp);
            if (f != stdin)
                fclose(f);
            return -1;
        }
    }
    if (f != stdin)
        fclose(f);
    return 0;
}

/* A host and its position, sorted by host, then by position. */
typedef struct indexed {
    const char *s;
    size_t i;
} indexed;

static int cmp_indexed(const void *a, const void *b)
{
    const indexed *x = a, *y = b;
    int c = strcmp(x->s, y->s);

    return c != 0 ? c : x->i < y->i ? -1 : x->i > y->i;
}

size_t cli_hosts_dedup(cli_hosts *h)
{
    indexed *idx = malloc((h->n ? h->n : 1) * sizeof(*idx));
    size_t i, lead = 0, k = 0, dropped = 0;

    if (idx == NULL)
        return (size_t)-1;
    for (i = 0; i < h->n; i++)
        idx[i] = (indexed){h->v[i], i};
    qsort(idx, h->n, sizeof(*idx), cmp_indexed);
    /* Each run of equal hosts starts with its first one; the rest go. */
    for (i = 1; i < h->n; i++) {
        if (strcmp(idx[lead].s, idx[i].s) != 0) {
            lead = i;
            continue;
        }
        free(h->v[idx[i].i]);
        h->v[idx[i].i] = NULL;
        dropped++;
    }
    free(idx);
    for (i = 0; i < h->n; i++)
        if (h->v[i] != NULL)
            h->v[k++] = h->v[i];
    h->n = k;
    return dropped;
}

char *cli_hosts_display(const char *typed)
{
    size_t n = strlen(typed), scheme, head, tail, o;
    char *out = malloc(n + 2);
    const char *k, *end = typed + n;
    int first = 1;

    if (out == NULL)
        return NULL;
    host_part(typed, n, &scheme, &head, &tail);
    memcpy(out, typed, scheme);
    o = scheme;
    if (head > scheme) { /* "user:password@": only "user@" stays */
        const char *colon = memchr(typed + scheme, ':', head - 1 - scheme);
        size_t u = colon != NULL ? (size_t)(colon - typed) - scheme : head - 1 - scheme;
        if (u > 0) {
            memcpy(out + o, typed + scheme, u);
            o += u;
            out[o++] = '@';
        }
    }
    memcpy(out + o, typed + head, n - tail - head);
    o += n - tail - head;
    /* The query, "?a=1&password=x&b=2", without its password= items. */
    for (k = end - tail; k < end;) {
        const char *amp = memchr(k + 1, '&', (size_t)(end - k - 1));
        const char *kend = amp != NULL ? amp : end;
        size_t len = (size_t)(kend - k - 1);
        if (!(len >= 9 && strncmp(k + 1, "password=", 9) == 0)) {
            out[o++] = first ? '?' : '&';
            memcpy(out + o, k + 1, len);
            o += len;
            first = 0;
        }
        k = kend;
    }
    out[o] = '\0';
    return out;
}

/* ---- compression for --group ---- */

/* Splits "prefix<digits>suffix" at the LAST run of digits. */
static int split_num(const char *s, size_t *pre, size_t *dlen)
{
    size_t n = strlen(s), end = n, start;

    while (end > 0 && !isdigit((unsigned char)s[end - 1]))
        end--;
    if (end == 0)
        return 0;
    start = end;
    while (start > 0 && isdigit((unsigned char)s[start - 1]))
        start--;
    if (end - start > 9)
        return 0;
    *pre = start;
    *dlen = end - start;
    return 1;
}

static int cmp_ul(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

/* Appends to a growing string. */
static int app(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = (*cap ? *cap : 64);
        char *b;
        while (c < *len + n + 1)
            c *= 2;
        b = realloc(*buf, c);
        if (b == NULL)
            return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/* 1 when s[0, n) leaves a '[' open. */
static int open_bracket(const char *s, size_t n)
{
    size_t i;
    int open = 0;

    for (i = 0; i < n; i++)
        if (s[i] == '[')
            open = 1;
        else if (s[i] == ']')
            open = 0;
    return open;
}

/* One host that may fold into a range: "prefix<num>suffix". */
typedef struct foldable {
    const char *s;
    size_t pre, dl;
    size_t idx;
} foldable;

/* Orders by prefix, then suffix, then position, so that the hosts of one
 * range sit together and the first of them comes first. */
static int cmp_foldable(const void *a, const void *b)
{
    const foldable *x = a, *y = b;
    int c;

    if (x->pre != y->pre)
        return x->pre < y->pre ? -1 : 1;
    c = memcmp(x->s, y->s, x->pre);
    if (c == 0)
        c = strcmp(x->s + x->pre + x->dl, y->s + y->pre + y->dl);
    if (c == 0)
        c = x->idx < y->idx ? -1 : x->idx > y->idx;
    return c;
}

static int same_range(const foldable *x, const foldable *y)
{
    return x->pre == y->pre && memcmp(x->s, y->s, x->pre) == 0 &&
           strcmp(x->s + x->pre + x->dl, y->s + y->pre + y->dl) == 0;
}

/* Appends "prefix[a-b,c]suffix" for the k hosts of one range (k >= 2). */
static int app_range(char **out, size_t *len, size_t *cap, const foldable *f, size_t k,
                     unsigned long *nums)
{
    size_t i, j;

    for (i = 0; i < k; i++)
        nums[i] = strtoul(f[i].s + f[i].pre, NULL, 10);
    qsort(nums, k, sizeof(*nums), cmp_ul);
    /* Equal hosts are one host: "h:1,h:1" gives "h:1", never "h:[1-1]". */
    for (i = j = 1; i < k; i++)
        if (nums[i] != nums[j - 1])
            nums[j++] = nums[i];
    k = j;
    if (k == 1)
        return app(out, len, cap, f[0].s, strlen(f[0].s));
    if (app(out, len, cap, f[0].s, f[0].pre) != 0 || app(out, len, cap, "[", 1) != 0)
        return -1;
    for (j = 0; j < k;) {
        size_t e = j;
        char buf[48];
        int m;
        while (e + 1 < k && nums[e + 1] == nums[e] + 1)
            e++;
        if (e == j)
            m = snprintf(buf, sizeof(buf), "%s%lu", j ? "," : "", nums[j]);
        else
            m = snprintf(buf, sizeof(buf), "%s%lu-%lu", j ? "," : "", nums[j], nums[e]);
        if (app(out, len, cap, buf, (size_t)m) != 0)
            return -1;
        j = e + 1;
    }
    if (app(out, len, cap, "]", 1) != 0)
        return -1;
    return app(out, len, cap, f[0].s + f[0].pre + f[0].dl, strlen(f[0].s + f[0].pre + f[0].dl));
}

/* Hosts that differ only in their last number fold into one range, shown
 * where the first of them stood; the others keep their place. Sorting by
 * (prefix, suffix) finds the ranges in O(n log n): fleets of 65,000 hosts
 * are common, and comparing every pair took over a minute. */
char *cli_hosts_compress(const char *const *hosts, size_t n)
{
    char *out = NULL;
    size_t len = 0, cap = 0, i, j, nf = 0;
    foldable *f = malloc((n ? n : 1) * sizeof(*f));
    /* For each host: SIZE_MAX when it stands alone, else its range's first
     * entry in f[] when it leads the range, or SIZE_MAX - 1 when it follows. */
    size_t *lead = malloc((n ? n : 1) * sizeof(*lead));
    size_t *count = malloc((n ? n : 1) * sizeof(*count));
    unsigned long *nums = malloc((n ? n : 1) * sizeof(*nums));

    if (f == NULL || lead == NULL || count == NULL || nums == NULL)
        goto fail;
    if (app(&out, &len, &cap, "", 0) != 0)
        goto fail;
    for (i = 0; i < n; i++) {
        size_t pre, dl, len_i = strlen(hosts[i]), scheme, head, tail;
        lead[i] = SIZE_MAX;
        host_part(hosts[i], len_i, &scheme, &head, &tail);
        /* A leading zero ("db01") would lose its padding in a range, and a
         * range inside an open '[' ("a[x1]"), or outside the part that
         * ranges expand in (a scheme, a userinfo, a query), would not read
         * back as the hosts it came from. */
        if (split_num(hosts[i], &pre, &dl) && hosts[i][pre] != '0' &&
            !open_bracket(hosts[i], pre) && pre >= head && pre + dl <= len_i - tail) {
            f[nf].s = hosts[i];
            f[nf].pre = pre;
            f[nf].dl = dl;
            f[nf].idx = i;
            nf++;
        }
    }
    qsort(f, nf, sizeof(*f), cmp_foldable);
    for (i = 0; i < nf; i = j) {
        for (j = i + 1; j < nf && same_range(&f[i], &f[j]); j++)
            lead[f[j].idx] = SIZE_MAX - 1;
        lead[f[i].idx] = i;
        count[f[i].idx] = j - i;
    }
    for (i = 0; i < n; i++) {
        if (lead[i] == SIZE_MAX - 1)
            continue;
        if (len > 0 && app(&out, &len, &cap, ",", 1) != 0)
            goto fail;
        if (lead[i] == SIZE_MAX || count[i] == 1) {
            if (app(&out, &len, &cap, hosts[i], strlen(hosts[i])) != 0)
                goto fail;
        } else if (app_range(&out, &len, &cap, f + lead[i], count[i], nums) != 0) {
            goto fail;
        }
    }
    free(f);
    free(lead);
    free(count);
    free(nums);
    return out;
fail:
    free(f);
    free(lead);
    free(count);
    free(nums);
    free(out);
    return NULL;
}
