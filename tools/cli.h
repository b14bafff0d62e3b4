/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/cli.h - the volley command-line tool's internal interfaces.
 * The tool uses only volley's public API. */
#ifndef VOLLEY_CLI_H
#define VOLLEY_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include <volley.h>

/* Exit statuses, following sysexits for usage errors, and 128 + SIGINT for
 * a run cut short by Ctrl-C. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_SERVER_ERROR = 1,
    CLI_EXIT_UNREACHABLE = 2,
    CLI_EXIT_USAGE = 64,
    CLI_EXIT_INTERRUPTED = 130
};

/* A host's status besides the library's VL_* codes: still running, or
 * still running when the operator pressed Ctrl-C. Both are positive, so
 * they never meet a VL_* code (0 or negative). */
enum { CLI_PENDING = 1, CLI_INTERRUPTED = 2 };

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
/* Drops the hosts typed more than once, keeping each first one in place.
 * O(n log n). Returns how many were dropped, or (size_t)-1 when out of
 * memory (h is unchanged then). */
size_t cli_hosts_dedup(cli_hosts *h);
/* The printable form of a typed host: as typed, without the password of
 * its userinfo ("user:pw@" becomes "user@", ":pw@" goes) and without any
 * password= in its query. Returns a malloc'd string, or NULL when out of
 * memory. */
char *cli_hosts_display(const char *typed);
void cli_hosts_free(cli_hosts *h);
/* "127.0.0.1:[7000-7002,7005],db1" from a list of printable hosts: hosts
 * that differ only in the last number of their host part fold into one
 * range where the first of them stood (equal hosts once: "h:1"); the
 * others keep their place. For hosts without a userinfo or query (display
 * forms, host:port), cli_hosts_add_list reads the result back as the same
 * set of hosts. O(n log n). Returns a malloc'd string, or NULL when
 * out of memory. */
char *cli_hosts_compress(const char *const *hosts, size_t n);

/* One Redis command: binary-safe arguments (each NUL-terminated too). */
typedef struct cli_cmd {
    int argc;
    char **argv;
    size_t *len;
} cli_cmd;

typedef struct cli_cmds {
    cli_cmd *v;
    size_t n, cap;
} cli_cmds;

/* Splits one line by redis-cli's quoting rules: words split by white
 * space; "double quotes" take \n \r \t \b \a \\ \" and \xHH escapes;
 * 'single quotes' are literal but for \'. A blank line adds nothing.
 * Returns 0, or -1 with a message in err (unbalanced quotes; out of
 * memory). */
int cli_cmds_add_line(cli_cmds *c, const char *line, size_t len, char *err, size_t errlen);
/* Adds every line of f ("file:LINE: ..." in err on failure). */
int cli_cmds_add_file(cli_cmds *c, FILE *f, const char *name, char *err, size_t errlen);
/* Adds argv as one command (copied). Returns 0 or -1 (out of memory). */
int cli_cmds_add_argv(cli_cmds *c, int argc, char *const *argv);
/* The name of a command that holds its connection for pushed messages
 * (SUBSCRIBE, MONITOR...), which a fan-out cannot run; NULL when none. */
const char *cli_cmds_refused(const cli_cmds *c);
void cli_cmds_free(cli_cmds *c);

/* One host's outcome as the CLI keeps it, built from its fan-out results
 * (a Redis run of more than VL_FANOUT_MAX_BATCH commands is several). */
typedef struct cli_rec {
    int status;        /* VL_OK, a VL_* failure, CLI_PENDING or CLI_INTERRUPTED */
    double latency_ms; /* summed over its fan-outs */
    size_t replies;    /* Redis replies kept so far */
    char *text;        /* the rendered text so far (malloc'd; may be NULL) */
    char *error;       /* the message, without the host's name; NULL when ok */
    unsigned my_errno; /* MySQL errno of a failure, 0 when none */
    char sqlstate[8];
    void *json;        /* the JSON value so far (a jansson json_t *) */
    int final;         /* nothing more will be added */
} cli_rec;

/* Adds host i of fan-out result r to rec: its replies (every one of a
 * batch that came back) or result, its latency, and its status unless rec
 * failed already. `batch` says whether the run has several commands (JSON
 * "replies" instead of "reply"). Returns 0, or -1 when out of memory. */
int cli_rec_add(cli_rec *rec, const vl_fanout_result *r, size_t i, int batch);
/* rec as one JSON object line (malloc'd, no newline) naming `host`;
 * NULL when out of memory. */
char *cli_rec_json(const cli_rec *rec, const char *host);
/* Marks a record that is not final as cut short by Ctrl-C: status
 * CLI_INTERRUPTED, what came back so far kept, "(interrupted)" after it. */
void cli_rec_interrupt(cli_rec *rec);
/* "ok", "error", "timeout", "connect" or "interrupted". */
const char *cli_rec_word(int status);
void cli_rec_free(cli_rec *rec);

#endif

/* ---- running (tools/cli_run.c) ---- */

/* What one run sends where. Each host is Redis or MySQL (kind[i] 1 for
 * MySQL); Redis hosts get every command of cmds, pipelined
 * VL_FANOUT_MAX_BATCH at a time (one connection per host per chunk, so a
 * connection's state, such as SELECT or MULTI, does not outlive its chunk),
 * MySQL hosts get sql. */
typedef struct cli_job {
    vl_loop *loop;
    const char *const *urls;
    const unsigned char *kind;
    size_t n;
    const cli_cmds *cmds;
    const char *sql;
    vl_fanout_options fo;          /* timeouts and concurrency */
    const char *password[2];       /* Redis's and MySQL's, for URLs without one */
    cli_rec *recs;                 /* n records, status CLI_PENDING */
    void (*on_final)(size_t host, void *ud); /* a host's record is complete */
    void *ud;
    volatile sig_atomic_t *interrupt; /* set by a signal handler: stop now */
    int progress;                  /* print "58/200 done" on stderr */
    char fatal[512];               /* why the run could not start */
    int fatal_code;                /* VL_EINVAL for a bad URL, else another code */
} cli_job;

/* Runs the job on its loop until every host is final or *interrupt is set.
 * Returns VL_OK, VL_ECANCELED when interrupted (the hosts still running are
 * cancelled and stay CLI_PENDING), or a failure with job->fatal set. */
int cli_run(cli_job *job);

/* ---- printing the outcome (tools/cli_output.c) ---- */

enum { CLI_SORT_NONE, CLI_SORT_HOST, CLI_SORT_STATUS, CLI_SORT_LATENCY };

typedef struct cli_output {
    const cli_rec *recs;
    const char *const *names; /* printable host names, as the user typed them */
    size_t n;
    int json, group, diff, latency, sort;
} cli_output;

/* Prints host i: JSON, or its lines each prefixed "host: " (with the
 * latency when o->latency). */
void cli_output_host(const cli_output *o, size_t i);
/* Prints every host in the order o->sort asks for: one by one, grouped
 * (-g) or as the majority's output once plus the hosts that differ
 * (--diff). Hosts already printed (done[i] 1; done may be NULL) are not
 * printed again. */
void cli_output_all(const cli_output *o, const unsigned char *done);
/* "6 hosts: 4 ok, 1 error (h), 1 timeout (h)" on stderr; returns the exit
 * status. */
int cli_output_summary(const cli_output *o);
