// next() has a function-local static with a dynamic initialiser, so gcc
// adds a guard variable (_ZGVZ4nextvE4base) next to it (_ZZ4nextvE4base).
// The new code must use both as they are: the initialiser must not run
// again, and the count goes on. initial is extern "C" so that no C++
// exception is expected through next (see 63-cpp-exception-through).
#include <cstdio>

extern "C" __attribute__((noinline)) int initial(void)
{
	static volatile int seed = 40;
	return seed;
}

__attribute__((noinline)) int next(void)
{
	static int base = initial();
	return ++base;
}

extern "C" void corpus_step(void)
{
	std::printf("next=%d\n", next());
}
