/* A process to hot patch. It reads one function name per line from stdin,
 * calls that function and prints what it returned, so a test sees what the
 * very next call runs. Arguments start background threads:
 *   busy     a thread calling busy() (inside it half of the time)
 *   forever  a thread that enters forever() and never leaves
 *   workers  4 threads calling answer() in a loop, blocked in nanosleep between
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef VARIANT
#define VARIANT 1
#endif

__attribute__((noinline)) int helper(void) { return 100; }
__attribute__((noinline)) int answer(void) { return VARIANT; }
__attribute__((noinline)) int second(void) { return 2; }

/* tiny is 3 bytes: too small for any jump. */
int tiny(void);
asm(".text\n.globl tiny\n.type tiny,@function\ntiny:\n"
    "  xor %eax,%eax\n  ret\n.size tiny, .-tiny\n");

/* loopy branches back into its first 5 bytes: only quiescent mode is safe. */
int loopy(void);
asm(".text\n.globl loopy\n.type loopy,@function\nloopy:\n"
    "  xor %eax,%eax\n1:\n  inc %eax\n  cmp $10,%eax\n  jl 1b\n  ret\n"
    ".size loopy, .-loopy\n");

/* reader loads a global through a %rip-relative address within its first
 * bytes, which a stub must relocate. */
int global_value = 77;
__attribute__((noinline)) int reader(void) { return global_value; }

/* branchy starts with a short conditional branch, which a stub must widen. */
int branchy(void);
asm(".text\n.globl branchy\n.type branchy,@function\nbranchy:\n"
    "  xor %eax,%eax\n  test %eax,%eax\n  je 1f\n  mov $1,%eax\n  ret\n1:\n"
    "  mov $2,%eax\n  ret\n"
    ".size branchy, .-branchy\n");

/* endbr starts with endbr64, which must stay in place. */
int endbr(void);
asm(".text\n.globl endbr\n.type endbr,@function\nendbr:\n"
    "  endbr64\n  mov $5,%eax\n  ret\n.size endbr, .-endbr\n");

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* busy spins for 20 ms. */
__attribute__((noinline)) int busy(void) {
  double end = now() + 0.020;
  while (now() < end) {
  }
  return 3;
}

__attribute__((noinline)) int forever(void) {
  for (;;)
    asm volatile("");
  return 4;
}

static volatile long calls;

static void *busy_loop(void *arg) {
  (void)arg;
  for (;;) {
    busy();
    usleep(20000);
  }
  return NULL;
}

static void *forever_loop(void *arg) {
  (void)arg;
  forever();
  return NULL;
}

static void *worker(void *arg) {
  (void)arg;
  struct timespec ts = {0, 1000000};
  for (;;) {
    calls += answer();
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static struct {
  const char *name;
  int (*fn)(void);
} table[] = {
    {"helper", helper}, {"answer", answer}, {"second", second},
    {"tiny", tiny},     {"loopy", loopy},   {"endbr", endbr},
    {"busy", busy},     {"reader", reader}, {"branchy", branchy},
};

int main(int argc, char **argv) {
  pthread_t th;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "busy") == 0)
      pthread_create(&th, NULL, busy_loop, NULL);
    else if (strcmp(argv[i], "forever") == 0)
      pthread_create(&th, NULL, forever_loop, NULL);
    else if (strcmp(argv[i], "workers") == 0)
      for (int j = 0; j < 4; j++)
        pthread_create(&th, NULL, worker, NULL);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready\n");
  char line[64];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    int found = 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
      if (strcmp(line, table[i].name) == 0) {
        printf("%d\n", table[i].fn());
        found = 1;
      }
    }
    if (!found)
      printf("unknown %s\n", line);
  }
  return 0;
}
