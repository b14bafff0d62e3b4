/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/fuzz/fuzz_cli_hosts.c - libFuzzer target for the CLI's host lists
 * (tools/cli_hosts.c): splitting, range expansion, password scrubbing and
 * compression.
 *
 * Each input is one -H list (cut at its first NUL). Checked for every input:
 * - expansion succeeds, or fails with a message that quotes no password;
 * - scrubbing touches passwords only: the scrubbed list expands exactly when
 *   the list does, to as many hosts, each the scrubbed form of the host
 *   expanded from the list;
 * - compressing the hosts and expanding the result gives back the same set
 *   of hosts (equal hosts fold into one: "h:1,h:1" is "h:1"), for hosts
 *   that hold no userinfo or query, which are never expanded;
 * - no crash, no leak (ASan and LeakSanitizer).
 */
#include "cli.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Expansion stays cheap enough to fuzz quickly with this many hosts. */
#define FZ_MAX_CHECKED 2000

/* Every fixed word the messages use: a password that happens to be one of
 * them is no leak. */
static const char messages[] = "unclosed '[' bad range too large a range in a host (not shown: "
                               "it may hold a password) in host '' host too long more than "
                               "100000 hosts out of memory";

static void check(int ok, const char *what, const char *list)
{
    if (!ok) {
        fprintf(stderr, "fuzz_cli_hosts: %s: '%s'\n", what, list);
        abort();
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts v and drops repeats; returns the new count. */
static size_t sort_unique(char **v, size_t n)
{
    size_t i, k = 0;

    qsort(v, n, sizeof(*v), cmp_str);
    for (i = 0; i < n; i++)
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0)
            v[k++] = v[i];
    return k;
}

/* A message may not hold 4 or more bytes of a password (the bytes the
 * scrub turned to 'x') unless the same bytes are fixed text of a message,
 * or appear in the message of the scrubbed list too. */
static void check_message(const char *list, const char *scrubbed, const char *err,
                          const char *err_scrubbed)
{
    size_t i = 0, n = strlen(list);

    while (i < n) {
        size_t j = i, len;
        char run[4096];
        while (j < n && scrubbed[j] == 'x' && list[j] != 'x')
            j++;
        len = j - i;
        if (len >= 4 && len < sizeof(run)) {
            memcpy(run, list + i, len);
            run[len] = '\0';
            check(strstr(err, run) == NULL || strstr(messages, run) != NULL ||
                      strstr(err_scrubbed, run) != NULL,
                  "a message quotes a password", list);
        }
        i = j > i ? j : i + 1;
    }
}

/* The hosts a compressed list expands to are the hosts it was made from. */
static void check_compress(const cli_hosts *h, const char *list)
{
    cli_hosts back = {0};
    char err[512], *c;
    char **a, **b;
    size_t i, na, nb;

    for (i = 0; i < h->n; i++)
        if (strpbrk(h->v[i], "@?") != NULL)
            return;
    c = cli_hosts_compress((const char *const *)h->v, h->n);
    check(c != NULL, "compress failed", list);
    if (strlen(c) >= 4096 || cli_hosts_add_list(&back, c, err, sizeof(err)) != 0) {
        /* Only an item past the 4096-byte limit may fail to expand. */
        check(strlen(c) >= 4096 || strstr(err, "too long") != NULL,
              "a compressed list does not expand", list);
        cli_hosts_free(&back);
        free(c);
        return;
    }
    a = malloc((h->n ? h->n : 1) * sizeof(*a));
    b = malloc((back.n ? back.n : 1) * sizeof(*b));
    if (a != NULL && b != NULL) {
        for (i = 0; i < h->n; i++)
            a[i] = h->v[i];
        for (i = 0; i < back.n; i++)
            b[i] = back.v[i];
        na = sort_unique(a, h->n);
        nb = sort_unique(b, back.n);
        check(na == nb, "compress then expand changes the number of distinct hosts", list);
        for (i = 0; i < na; i++)
            check(strcmp(a[i], b[i]) == 0, "compress then expand changes a host", list);
    }
    free(a);
    free(b);
    cli_hosts_free(&back);
    free(c);
}

/* An upper bound on how many hosts the list expands to: the product of
 * what each range-like bracket holds. Lists of ranges whose product runs
 * to the 100,000-host limit take most of a second each to fail, and would
 * slow the fuzzer down to a crawl while teaching it nothing new. */
static double expansion_bound(const char *s)
{
    double total = 1;
    const char *lb;

    while ((lb = strchr(s, '[')) != NULL) {
        const char *p = lb + 1;
        double here = 0;
        while (*p != '\0' && *p != ']' && *p != '[') {
            char *end;
            double a = strtod(p, &end), b = a;
            if (end == p) {
                p++;
                continue;
            }
            if (*end == '-') {
                const char *q = end + 1;
                b = strtod(q, &end);
                if (end == q)
                    b = a;
            }
            here += b >= a ? b - a + 1 : 1;
            p = end;
        }
        if (here > 0)
            total *= here;
        s = lb + 1;
    }
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cli_hosts h = {0}, s = {0};
    char *list = malloc(size + 1), *scrubbed = malloc(size + 1);
    char err[512] = "", err_s[512] = "";
    int rc, rc_s;
    size_t i;

    if (list == NULL || scrubbed == NULL) {
        free(list);
        free(scrubbed);
        return 0;
    }
    memcpy(list, data, size);
    list[size] = '\0';
    if (expansion_bound(list) > 20000) {
        free(list);
        free(scrubbed);
        return 0;
    }
    memcpy(scrubbed, list, size + 1);
    cli_hosts_scrub(scrubbed);
    check(strlen(scrubbed) == strlen(list), "the scrub changed the length", list);

    rc = cli_hosts_add_list(&h, list, err, sizeof(err));
    if (rc == 0 && h.n > FZ_MAX_CHECKED)
        goto out; /* a long range: expanding it once more only slows the fuzzer */
    rc_s = cli_hosts_add_list(&s, scrubbed, err_s, sizeof(err_s));
    check(rc == 0 || rc == -1, "status is neither 0 nor -1", list);
    check(rc == 0 || err[0] != '\0', "a failure without a message", list);
    check(rc == rc_s, "the scrub changed whether the list expands", list);
    if (rc != 0) {
        check_message(list, scrubbed, err, err_s);
    } else {
        check(h.n == s.n, "the scrub changed the number of hosts", list);
        for (i = 0; i < h.n; i++) {
            char *one = strdup(h.v[i]);
            if (one == NULL)
                break;
            cli_hosts_scrub(one);
            check(strcmp(one, s.v[i]) == 0, "scrub and expansion do not commute", list);
            free(one);
        }
        check_compress(&h, list);
    }
out:
    cli_hosts_free(&h);
    cli_hosts_free(&s);
    free(list);
    free(scrubbed);
    return 0;
}
