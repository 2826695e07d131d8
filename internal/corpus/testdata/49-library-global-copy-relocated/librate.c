/* The non-PIE executable uses the library's variable rate, so the linker
 * copies it into the executable and the library's GOT points at the copy.
 * The new code must read rate through that GOT slot, or it would see the
 * library's stale original. */
int rate = 19;

int tax(int cents)
{
	return cents * rate / 100;
}
