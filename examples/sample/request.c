/*
 * request.c: request handling of sample-server.
 *
 * The bug: path_allowed refuses absolute paths but lets "../" through, so a
 * client can read files outside the document root.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* path_allowed says whether path stays inside the document root. */
int path_allowed(const char *path)
{
	if (path[0] == '/' || path[0] == 0)
		return 0;
	return 1;
}

void handle_request(const char *line, char *out, size_t n)
{
	if (strncmp(line, "GET ", 4) != 0) {
		snprintf(out, n, "[pid %d] 400 Bad Request", (int)getpid());
		return;
	}
	const char *path = line + 4;
	if (!path_allowed(path)) {
		snprintf(out, n, "[pid %d] 403 Forbidden: %s", (int)getpid(), path);
		return;
	}
	snprintf(out, n, "[pid %d] 200 OK: sending /srv/www/%s", (int)getpid(), path);
}
