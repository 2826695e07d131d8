/* The fix inserts a field in the middle of a struct the program allocates
 * and passes by pointer: no variable changes size, but every field after
 * the new one moves, and objects the running process already holds keep
 * the old layout. The tree is built without -g: the --source driver must
 * still see the layout (its compiler wrapper can add -g, which does not
 * change the code). */
#include <stdio.h>
#include <stdlib.h>

struct conn {
	int fd;
	int state;
	long bytes;
};

__attribute__((noinline)) long account(struct conn *c, int n)
{
	c->bytes += n;
	return c->bytes;
}

static struct conn *volatile conn;

void corpus_step(void)
{
	if (!conn) {
		conn = calloc(1, sizeof *conn);
		conn->fd = 3;
	}
	printf("bytes=%ld\n", account(conn, 100));
}
