struct entry {
	const char *name;
	long (*fn)(void);
};
extern long a_value(void), b_value(void);
const struct entry entries[] = {{"a_value", a_value}, {"b_value", b_value}, {0, 0}};
