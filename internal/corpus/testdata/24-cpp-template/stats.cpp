// Window<T>::add is a template; each instantiation is a weak symbol in its
// own COMDAT section. The fix changes the template, so both instantiations
// change.
#include <cstdio>

template <typename T>
class Window {
public:
	__attribute__((noinline)) void add(T v)
	{
		sum_ += v;
		n_++;
	}
	T mean() const { return n_ ? sum_ / n_ : 0; }

private:
	T sum_ = 0;
	int n_ = 0;
};

static Window<int> wi;
static Window<double> wd;

extern "C" void corpus_step(void)
{
	wi.add(10);
	wd.add(2.5);
	std::printf("int=%d double=%.2f\n", wi.mean(), wd.mean());
}
