/* libmain.c: "call" runs lib_answer from liba (linked), "dlcall ARG" runs
 * dl_answer from the library named by argv[1], loaded with dlopen. */
#include "serve.h"
#include <dlfcn.h>

int lib_answer(long x, const char *arg, char *out, size_t n);

static answer_fn dl_answer;

static int extra(const char *cmd, const char *arg, char *out, size_t n)
{
	if (strcmp(cmd, "dlcall") != 0)
		return 0;
	dl_answer(strtol(arg, NULL, 0), arg, out, n);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		fail("usage: libmain LIBRARY");
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h)
		fail("dlopen %s: %s", argv[1], dlerror());
	dl_answer = (answer_fn)dlsym(h, "dl_answer");
	if (!dl_answer)
		fail("dlsym dl_answer: %s", dlerror());
	serve(lib_answer, extra);
	return 0;
}
