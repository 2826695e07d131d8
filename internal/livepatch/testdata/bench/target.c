/* Target of the pause benchmark: argv[1] worker threads call bf0..bf9 in a
 * tight loop, so every stop of the process has to interrupt threads that are
 * running, often inside a patched function.
 *
 * The main thread blocks in read on stdin. For each "q" it answers with one
 * line "funcs K0 .. K9", Ki being 0 when bfi ran the old code and 1 when it ran
 * the new one, so the benchmark can check the patch does what it claims.
 * End of input makes it exit. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int bf0(int), bf1(int), bf2(int), bf3(int), bf4(int);
int bf5(int), bf6(int), bf7(int), bf8(int), bf9(int);

/* Upper bound on worker threads: the benchmark uses at most 64. */
#define MAX_WORKERS 1024

static int (*const funcs[10])(int) = {bf0, bf1, bf2, bf3, bf4, bf5, bf6, bf7, bf8, bf9};

static volatile int sink;

static void *worker(void *arg) {
	int x = (int)(long)arg;
	for (;;) {
		int acc = 0;
		acc += bf0(x); acc += bf1(x); acc += bf2(x); acc += bf3(x); acc += bf4(x);
		acc += bf5(x); acc += bf6(x); acc += bf7(x); acc += bf8(x); acc += bf9(x);
		sink = acc;
		x = (x + 1) & 0xffff;
	}
	return NULL;
}

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 1;
	if (n < 1 || n > MAX_WORKERS) {
		fprintf(stderr, "usage: %s THREADS (1..%d)\n", argv[0], MAX_WORKERS);
		return 2;
	}
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, (void *)(long)i) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	printf("ready %d\n", getpid());
	fflush(stdout);
	char buf[64];
	for (;;) {
		ssize_t r = read(0, buf, sizeof buf);
		if (r <= 0)
			return r < 0;
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] != 'q')
				continue;
			printf("funcs");
			for (int f = 0; f < 10; f++) {
				int d = funcs[f](7) - 35;
				printf(" %d", d == 1000 + f ? 0 : d == 9000 + f ? 1 : -1);
			}
			printf("\n");
			fflush(stdout);
		}
	}
}
