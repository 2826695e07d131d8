/* A template both files instantiate: each object has a weak copy in a
 * COMDAT group, the program keeps one. */
template <typename T> __attribute__((noinline)) T weigh(T x)
{
	T s = 0;
	for (T i = 0; i < x; i++)
#if defined(FIX2)
		s += i * 7;
#elif defined(FIX)
		s += i * 5;
#else
		s += i * 3;
#endif
	return s;
}
