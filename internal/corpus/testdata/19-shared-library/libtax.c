/* A -fPIC shared library: tax reads the library's own global rate and
 * calls its global helper round_cents, both of which another module could
 * interpose, so they are reached through the library's GOT and PLT. */
int rate = 19;

int round_cents(int c)
{
	return (c + 50) / 100 * 100;
}

int tax(int cents)
{
	return round_cents(cents * rate / 100);
}
