#include <stdio.h>
static __attribute__((noinline)) int helper(int x) { return x + 1; }
int shared_counter;
__attribute__((noinline)) int one(int x) { shared_counter++; puts("one"); return helper(x); }
