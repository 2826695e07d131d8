/* audit is a global function of the program in another file; before the
 * fix nothing in login.c calls it. */
#include <stdio.h>

int audited;

__attribute__((noinline)) void audit(const char *what)
{
	audited++;
	printf("[audit %s #%d] ", what, audited);
}
