// Target for the module tests: an executable that maps a shared library of
// its own (built next to it) besides libc, then waits for stdin to close.
#include <stdio.h>
#include <unistd.h>

int lib_answer(void);

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready %d %d\n", getpid(), lib_answer());
	char c;
	while (read(0, &c, 1) > 0)
		;
	printf("bye\n");
	return 0;
}
