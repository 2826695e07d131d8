/* foo.h: the library's interface. */
int foo_value(int x);
