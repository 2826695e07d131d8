struct entry {
	const char *name;
	long (*fn)(void);
};
extern long lib_depth(void);
const struct entry entries[] = {{"lib_depth", lib_depth}, {0, 0}};
