/* The source file a patch is built for. Its fixed versions are selected
 * with -D flags, so orig.o and every fixed.o share the file name lib.c,
 * as they do when an author rebuilds one file of a real program. */
#include <stdio.h>
#include <unistd.h>

int counter;
int initval = 5;
int sizes[4];
static int hits;
__attribute__((visibility("hidden"))) extern int twice(int);
__thread int tls_existing;
#ifdef REFUSE_TLS
__thread int per_thread;
#endif
#ifdef REFUSE_NEWGLOBAL
int brand_new_state;
#endif

/* Same name as a static function in other.c: the patch must bind to this one. */
__attribute__((noinline)) static int helper(int x)
{
	return (x ^ 0x5a) * 3 + 1;
}

__attribute__((noinline)) int get_hits(void) { return hits; }

/* A constructor whose body a fix may change: running processes ran it. */
int ctor_value;
__attribute__((constructor)) static void setup(void)
{
#ifdef REFUSE_CTORBODY
	ctor_value = 20;
#else
	ctor_value = 10;
#endif
}

__attribute__((noinline)) int bump_tls(int x)
{
#ifdef REFUSE_TLSREF
	tls_existing += 2 * x;
#else
	tls_existing += x;
#endif
	return tls_existing;
}

/* Unchanged: makes the library import printf and fprintf, which the fix uses. */
__attribute__((noinline)) void show(void)
{
	printf("counter=%d\n", counter);
	fprintf(stdout, "hits=%d\n", hits);
}

__attribute__((noinline)) void tiny(void)
{
#ifdef REFUSE_TINY
	counter++;
#endif
}

#ifdef FIX
/* New in the fix: reached only from the new greet. */
__attribute__((noinline)) static int bonus(int x)
{
	return x * 1000 + sizes[1];
}
#endif

#ifdef FIX
/* Has a static named like greet's. The fix defines it before greet, so gcc
 * numbers the two "calls" statics the other way round than in orig.o. */
__attribute__((noinline)) int tick(void)
{
	static int calls;
	return ++calls;
}
#endif

__attribute__((noinline)) int greet(int x)
{
	static int calls;
	calls++;
#if defined(FIX)
	counter += 2 * x;
	hits += 10;
	printf("patched greeting #%d for %d\n", calls, x);
	fprintf(stdout, "via stdout: %s\n", "a brand new literal");
	return helper(x) + bonus(calls) + twice(x);
#elif defined(REFUSE_NEWLIB)
	counter += x;
	return (int)getpid() + calls;
#elif defined(REFUSE_TLS)
	per_thread += x;
	return per_thread + calls;
#elif defined(REFUSE_NEWGLOBAL)
	brand_new_state += x;
	return brand_new_state + calls;
#else
	counter += x;
	hits++;
	puts("hello");
	return helper(x) + calls + initval + twice(x);
#endif
}

#ifndef FIX
/* Has a static named like greet's. The fix defines it before greet, so gcc
 * numbers the two "calls" statics the other way round than in orig.o. */
__attribute__((noinline)) int tick(void)
{
	static int calls;
	return ++calls;
}
#endif

/* A switch gcc compiles to a jump table: relocated read-only data. */
__attribute__((noinline)) int classify(int n, int v)
{
	switch (n) {
	case 0: return v * 3;
	case 1: return v + 17;
	case 2: return v ^ 0x55;
#ifdef FIX
	case 3: return (v << 4) + 1;
#else
	case 3: return v << 4;
#endif
	case 4: return v - 99;
	case 5: return v * v;
	case 6: return ~v;
	case 7: return v / 3;
	}
	return -1;
}

#ifdef REFUSE_INIT
int initial_value_changes = 2;
#else
int initial_value_changes = 1;
#endif

#ifdef REFUSE_SIZE
long grows[8];
#else
long grows[4];
#endif

__attribute__((noinline)) long use_grows(int i) { return grows[i & 3] + initial_value_changes; }

/* A global constant other files could read. */
#ifdef REFUSE_CONST
const int limits[4] = {10, 20, 30, 41};
#else
const int limits[4] = {10, 20, 30, 40};
#endif
__attribute__((noinline)) int limit(int i) { return limits[i & 3]; }

#ifdef REFUSE_CTOR
__attribute__((constructor)) static void start_early(void) { counter = 1; }
#endif
