/* driver.c: main of the single-threaded targets; the code under test is
 * linked in from another object (target.c), as in a real program. */
#include "serve.h"

int answer(long x, const char *arg, char *out, size_t n);

int main(void)
{
	serve(answer, NULL);
	return 0;
}
