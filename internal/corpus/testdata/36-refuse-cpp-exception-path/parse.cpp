// The fix changes what parse_port does in its catch block. New code has no
// unwind tables registered with the running process, so an exception
// thrown through it could not be caught: the builder must refuse it.
#include <cstdio>
#include <stdexcept>
#include <string>

__attribute__((noinline)) int parse_port(const char *s)
{
	try {
		int v = std::stoi(s);
		return v;
	} catch (const std::exception &) {
		return -1;
	}
}

static const char *volatile good = "8080", *volatile bad = "http";

extern "C" void corpus_step(void)
{
	std::printf("good=%d bad=%d\n", parse_port(good), parse_port(bad));
}
