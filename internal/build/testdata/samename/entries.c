struct entry {
	const char *name;
	long (*fn)(void);
};
extern long one(void), two(void);
const struct entry entries[] = {{"one", one}, {"two", two}, {0, 0}};
