/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/cli.h - the volley command-line tool's internal interfaces.
 * The tool uses only volley's public API. */
#ifndef VOLLEY_CLI_H
#define VOLLEY_CLI_H

#include <stddef.h>
#include <stdio.h>

#include <volley.h>

/* Exit statuses, following sysexits for usage errors. */
enum { CLI_EXIT_OK = 0, CLI_EXIT_SERVER_ERROR = 1, CLI_EXIT_UNREACHABLE = 2, CLI_EXIT_USAGE = 64 };

typedef struct cli_hosts {
    char **v;
    size_t n, cap;
} cli_hosts;

/* Adds a comma-separated list; expands numeric ranges "h:[7000-7005]" in
 * the host, port and path, never in a URL's userinfo or query, which may
 * hold a password. Returns 0, or -1 with a message in err that never quotes
 * the userinfo or the query. */
int cli_hosts_add_list(cli_hosts *h, const char *list, char *err, size_t errlen);
/* Overwrites, in place, the passwords in a host list as cli_hosts_add_list
 * reads it ("redis://:pw@h", "user:pw@h", "unix:///s?password=pw"), with
 * 'x', so that a list given in argv no longer shows them in ps. */
void cli_hosts_scrub(char *list);
/* Adds one host list per line; '#' starts a comment; "-" is stdin. */
int cli_hosts_add_file(cli_hosts *h, const char *path, char *err, size_t errlen);
void cli_hosts_free(cli_hosts *h);
/* "127.0.0.1:[7000-7002,7005],db1" from a list of printable hosts: hosts
 * that differ only in the last number of their host part fold into one
 * range where the first of them stood (equal hosts too: "h:[1-1]"); the
 * others keep their place. For hosts without a userinfo or query (display
 * forms, host:port), cli_hosts_add_list reads the result back as the same
 * set of hosts. O(n log n). Returns a malloc'd string, or NULL when
 * out of memory. */
char *cli_hosts_compress(const char *const *hosts, size_t n);

/* Renders host i's outcome as text (malloc'd, ends with '\n' unless empty). */
char *cli_render_text(const vl_fanout_result *r, size_t i);
/* Prints host i as one JSON object on one line. Returns 0 or -1. */
int cli_render_json(FILE *out, const vl_fanout_result *r, size_t i);

#endif
