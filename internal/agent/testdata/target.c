/* target.c: a long-running program the agent must keep patched. It answers
 * "ready", then answers one command per line on stdin:
 *   exe        prints exe_answer() (a function of the executable)
 *   lib        prints lib_answer() (from libfix.so, linked at start)
 *   dl PATH    dlopen()s PATH now and prints "ok"
 *   dlcall     prints dl_answer() from the library dlopen()ed
 *   crash      prints exe_crash(); the test patches it to crash */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lib_answer(void);

__attribute__((noinline)) int exe_answer(void) { return 1; }
__attribute__((noinline)) int exe_crash(void) { return 7; }

int main(void)
{
	char line[4096];
	int (*dl_answer)(void) = NULL;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (strcmp(line, "exe") == 0) {
			printf("%d\n", exe_answer());
		} else if (strcmp(line, "lib") == 0) {
			printf("%d\n", lib_answer());
		} else if (strncmp(line, "dl ", 3) == 0) {
			void *h = dlopen(line + 3, RTLD_NOW);
			dl_answer = h ? (int (*)(void))dlsym(h, "dl_answer") : NULL;
			printf("%s\n", dl_answer ? "ok" : dlerror());
		} else if (strcmp(line, "dlcall") == 0) {
			printf("%d\n", dl_answer ? dl_answer() : -1);
		} else if (strcmp(line, "crash") == 0) {
			printf("%d\n", exe_crash());
		} else {
			printf("unknown command %s\n", line);
		}
	}
	return 0;
}
