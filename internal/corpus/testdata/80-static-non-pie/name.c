/* A statically linked non-PIE program: libc is part
 * of the module. The fix calls strlen, an IFUNC resolved at startup into
 * the program's own IRELATIVE GOT slot, and strchr. */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) int valid_name(const char *s)
{
	return strchr(s, '/') == NULL;
}

static const char *volatile name = "a-very-long-user-name", *volatile other = "ok";

void corpus_step(void)
{
	printf("valid=%d,%d len=%zu\n", valid_name(name), valid_name(other), strlen(other));
}
