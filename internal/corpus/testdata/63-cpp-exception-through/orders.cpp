// total() has no exception handling of its own, but the exception that
// price() throws for an unknown item unwinds through it to the catch in
// corpus_step. The fix changes total() only; the unwinder must still find
// its way through the new code.
#include <cstdio>
#include <stdexcept>

__attribute__((noinline)) int price(int item)
{
	if (item < 0)
		throw std::out_of_range("unknown item");
	return item * 10;
}

__attribute__((noinline)) int total(const int *items, int n)
{
	int sum = 0;

	for (int i = 0; i < n; i++)
		sum += price(items[i]);
	return sum;
}

static const int good[] = {1, 2, 3}, bad[] = {1, -1};
static volatile int ng = 3, nb = 2;

extern "C" void corpus_step(void)
{
	int t = total(good, ng);

	try {
		total(bad, nb);
		std::printf("total=%d bad=accepted\n", t);
	} catch (const std::out_of_range &) {
		std::printf("total=%d bad=rejected\n", t);
	}
}
