// C++ under patch: a member function and template instantiations (weak, in
// COMDAT groups) patch like C functions; changes on an exception path are
// refused, since the new code has no unwind tables in the process.
#include <stdexcept>
#include <string>

#if defined(FIX)
#define K 4
#else
#define K 3
#endif

struct Counter {
	int step;
	long advance(long x) const;
};

__attribute__((noinline)) long Counter::advance(long x) const
{
	long s = 0;
	for (long i = 0; i < x; i++)
		s += i * step + K;
	return s;
}

template <typename T> __attribute__((noinline)) T sum_sq(const T *v, int n)
{
	T s = 0;
	for (int i = 0; i < n; i++)
		s += v[i] * v[i] + K;
	return s;
}

__attribute__((noinline)) int parse(const char *s)
{
	try {
		return std::stoi(s);
	} catch (const std::exception &) {
#ifdef FIX_EXC
		return -2;
#else
		return -1;
#endif
	}
}

__attribute__((noinline)) int must_positive(int x)
{
	if (x < 0)
		throw std::invalid_argument("negative");
#ifdef FIX_THROW
	return x * 3;
#else
	return x * 2;
#endif
}

/* No handlers of its own, but must_positive's exception passes through. */
__attribute__((noinline)) int twice_positive(int x)
{
#ifdef FIX_THROUGH
	return must_positive(x) + must_positive(x + 2);
#else
	return must_positive(x) + must_positive(x + 1);
#endif
}

/* Calls a C++ function of this file that cannot throw: patchable. */
__attribute__((noinline)) long square(long x) { return x * x; }
__attribute__((noinline)) long sum_squares(long n)
{
	long s = 0;
	for (long i = 0; i < n; i++)
		s += square(i) + K;
	return s;
}

static volatile long arg[4] = {10, 4, 0, 7};
static const char *volatile bad = "http";

extern "C" {
static long p_member() { Counter c{static_cast<int>(arg[1])}; return c.advance(arg[0]); }
static long p_template()
{
	long l[3] = {arg[0], arg[1], arg[3]};
	int i[2] = {static_cast<int>(arg[1]), static_cast<int>(arg[3])};
	return sum_sq<long>(l, 3) * 1000 + sum_sq<int>(i, 2);
}
static long p_parse() { return parse(bad); }
static long p_positive() { return twice_positive(static_cast<int>(arg[3])); }
static long p_squares() { return sum_squares(arg[0]); }

struct entry {
	const char *name;
	long (*fn)(void);
};
extern const struct entry entries[] = {
	{"p_member", p_member}, {"p_template", p_template}, {"p_parse", p_parse}, {"p_positive", p_positive}, {"p_squares", p_squares}, {0, 0}};
}
