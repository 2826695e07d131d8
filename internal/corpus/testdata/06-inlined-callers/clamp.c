/* clamp is inlined into all three callers and has no symbol of its own:
 * fixing it changes the callers, which the bundle replaces. */
static inline int clamp(int v)
{
	if (v < 0)
		return 0;
	if (v > 100)
		return 100;
	return v;
}

int volume(int v) { return clamp(v) * 2; }
int balance(int v) { return clamp(v - 50) + 7; }
int treble(int v) { return clamp(v * 3) - 1; }
