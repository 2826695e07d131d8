// main.cc: a C++ program with a class template and a namespace, answering
// one command per line:
//   price   price_of(2): Price<long>::total, a template member function
#include <cstdio>
#include <cstring>

namespace shop {

template <typename T> struct Price {
	T cents;
	__attribute__((noipa)) T total(int n) const
	{
		T t = 0;
		for (int i = 0; i < n; i++)
			t += cents;
		return t;
	}
};

} // namespace shop

__attribute__((noipa)) long price_of(int n)
{
	shop::Price<long> p{250};
	return p.total(n);
}

int main()
{
	char line[64];

	setvbuf(stdout, nullptr, _IOLBF, 0);
	std::printf("ready\n");
	while (std::fgets(line, sizeof line, stdin)) {
		line[std::strcspn(line, "\n")] = 0;
		if (std::strcmp(line, "price") == 0)
			std::printf("%ld\n", price_of(2));
		else
			std::printf("unknown %s\n", line);
	}
	return 0;
}
