/*
 * serve.h: the line protocol every e2e target speaks on stdin/stdout.
 *
 * The test writes one command per line; the target answers with exactly one
 * line starting with "= ". Lines starting with "event " are written by other
 * threads at any time, and a line starting with "ERR " means the target saw
 * something a user would call a bug (an EINTR, a short sleep, a wrong value);
 * the target exits with status 2 right after writing it.
 *
 * Every line is written with one write(2) so lines of different threads never
 * mix. Any EINTR is an error: hot patching must be invisible to the target.
 *
 * Commands understood by every target:
 *   call ARG       answer(strtol(ARG), ARG) from the code under test
 *   pid            the process id
 *   addr           the address of the function "call" runs
 *   tag            the BUILD_TAG the executable was compiled with
 *   fork IN OUT    fork a child that serves the same protocol on the FIFOs
 *                  IN and OUT; answers the child's pid (single-threaded
 *                  targets only)
 */
#ifndef SERVE_H
#define SERVE_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef BUILD_TAG
#define BUILD_TAG "1"
#endif

/* The function under test: writes its answer into out. */
typedef int (*answer_fn)(long x, const char *arg, char *out, size_t n);
/* A target's own commands: returns 1 if it handled cmd. */
typedef int (*extra_fn)(const char *cmd, const char *arg, char *out, size_t n);

static int serve_in = 0, serve_out = 1;
static char serve_buf[8192];
static size_t serve_len;
static const char serve_tag[] = "tag " BUILD_TAG;

static void serve_write(const char *prefix, const char *fmt, va_list ap)
{
	char line[4096];
	int k = snprintf(line, sizeof line, "%s", prefix);
	int m = vsnprintf(line + k, sizeof line - k - 1, fmt, ap);
	if (m < 0)
		m = 0;
	k += m;
	if (k > (int)sizeof line - 2)
		k = sizeof line - 2;
	line[k++] = '\n';
	for (int off = 0; off < k;) {
		ssize_t w = write(serve_out, line + off, k - off);
		if (w < 0) {
			/* Nobody to tell: the test reads a dead pipe. */
			_exit(3);
		}
		off += w;
	}
}

static __attribute__((unused)) void event(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	serve_write("event ", fmt, ap);
	va_end(ap);
}

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	serve_write("ERR ", fmt, ap);
	va_end(ap);
	_exit(2);
}

static void reply(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	serve_write("= ", fmt, ap);
	va_end(ap);
}

/* read_line returns the next line without its newline, or NULL at EOF. */
static char *read_line(void)
{
	static char line[sizeof serve_buf];
	for (;;) {
		char *nl = memchr(serve_buf, '\n', serve_len);
		if (nl) {
			size_t k = nl - serve_buf;
			memcpy(line, serve_buf, k);
			line[k] = 0;
			serve_len -= k + 1;
			memmove(serve_buf, nl + 1, serve_len);
			return line;
		}
		if (serve_len == sizeof serve_buf)
			fail("command line longer than %zu bytes", sizeof serve_buf);
		ssize_t r = read(serve_in, serve_buf + serve_len, sizeof serve_buf - serve_len);
		if (r < 0)
			fail("read commands: %s", strerror(errno));
		if (r == 0)
			return NULL;
		serve_len += r;
	}
}

static void serve_fork(const char *arg)
{
	char in[1024], out[1024];
	if (sscanf(arg, "%1023s %1023s", in, out) != 2) {
		reply("usage: fork IN OUT");
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		reply("fork: %s", strerror(errno));
		return;
	}
	if (pid > 0) {
		reply("%d", (int)pid);
		return;
	}
	/* The child dies with its parent so no test leaves it behind. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* O_RDWR never blocks on a FIFO, whoever opens the other end first. */
	int fin = open(in, O_RDWR | O_CLOEXEC);
	int fout = open(out, O_RDWR | O_CLOEXEC);
	if (fin < 0 || fout < 0)
		_exit(4);
	serve_in = fin;
	serve_out = fout;
	serve_len = 0;
}

static void serve(answer_fn answer, extra_fn extra)
{
	char out[2048];
	char *line;
	signal(SIGPIPE, SIG_IGN);
	while ((line = read_line()) != NULL) {
		char *arg = strchr(line, ' ');
		if (arg)
			*arg++ = 0;
		else
			arg = line + strlen(line);
		out[0] = 0;
		if (strcmp(line, "call") == 0) {
			answer(strtol(arg, NULL, 0), arg, out, sizeof out);
			reply("%s", out);
		} else if (strcmp(line, "pid") == 0) {
			reply("%d", (int)getpid());
		} else if (strcmp(line, "addr") == 0) {
			reply("%p", (void *)answer);
		} else if (strcmp(line, "tag") == 0) {
			reply("%s", serve_tag);
		} else if (strcmp(line, "fork") == 0) {
			serve_fork(arg);
		} else if (extra && extra(line, arg, out, sizeof out)) {
			reply("%s", out);
		} else {
			reply("unknown command %s", line);
		}
	}
}

#endif
