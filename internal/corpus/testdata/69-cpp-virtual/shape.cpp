// Square::area is virtual and only ever called through the vtable, which
// keeps pointing at the old address; the jump there leads to the fix.
#include <cstdio>

struct Shape {
	virtual ~Shape() {}
	virtual int area() const = 0;
};

struct Square : Shape {
	explicit Square(int s) : side(s) {}
	int area() const override;
	int side;
};

__attribute__((noinline)) int Square::area() const
{
	return side * side;
}

static Square sq(7);
static Shape *volatile shape = &sq;

extern "C" void corpus_step(void)
{
	std::printf("area=%d\n", shape->area());
}
