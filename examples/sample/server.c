/*
 * sample-server: a tiny line-based file server for the hotfleet demo.
 *
 * It listens on 127.0.0.1 (the port is printed at start), reads one request
 * line per connection ("GET PATH") and answers with one line. The request
 * handling lives in request.c, which has a security bug; fixed/request.c is
 * the fix that hotfleet applies to the running server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* handle_request writes the answer to one request line into out. */
void handle_request(const char *line, char *out, size_t n);

/* MAX_LINE bounds one request line; paths are short. */
#define MAX_LINE 1024

static void serve_one(int c)
{
	char line[MAX_LINE], out[MAX_LINE + 128];
	size_t len = 0;
	while (len < sizeof line - 1) {
		ssize_t r = read(c, line + len, sizeof line - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += r;
		if (memchr(line, '\n', len))
			break;
	}
	line[len] = 0;
	line[strcspn(line, "\r\n")] = 0;
	handle_request(line, out, sizeof out);
	size_t k = strlen(out);
	out[k++] = '\n';
	for (size_t off = 0; off < k;) {
		ssize_t w = write(c, out + off, k - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += w;
	}
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 0;
	signal(SIGPIPE, SIG_IGN);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		perror("socket");
		return 1;
	}
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof a;
	if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0 ||
	    getsockname(s, (struct sockaddr *)&a, &alen) != 0) {
		perror("listen on 127.0.0.1");
		return 1;
	}
	printf("sample-server: pid %d listening on 127.0.0.1:%d\n", (int)getpid(), ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("accept");
			return 1;
		}
		serve_one(c);
		close(c);
	}
}
