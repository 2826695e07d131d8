// Target with a thread that blocks with under 1 KiB of stack left below its
// stack pointer, so that no signal frame fits there, and a normal thread.
#define _GNU_SOURCE
#include <alloca.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define STACK (256 * 1024)
static char *base;

static void *tiny(void *arg) {
	(void)arg;
	printf("tiny %ld\n", (long)syscall(SYS_gettid));
	char here;
	size_t left = (uintptr_t)&here - (uintptr_t)base;
	volatile char *p = alloca(left - 768);
	p[0] = 1;
	for (;;)
		syscall(SYS_pause);
}

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	// A guard page below keeps the stack a mapping of its own.
	char *m = mmap(NULL, STACK + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || mprotect(m, 4096, PROT_NONE) != 0)
		return 1;
	base = m + 4096;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, base, STACK);
	pthread_t th;
	pthread_create(&th, &attr, tiny, NULL);
	usleep(100000);
	printf("ready %d\n", getpid());
	char c;
	while (read(0, &c, 1) > 0)
		;
	printf("bye\n");
	return 0;
}
