struct entry {
	const char *name;
	long (*fn)(void);
};
extern long c_weigh(void), c_scale(void), c_classify(void), c_check(void), c_classify2(void);
const struct entry entries[] = {
	{"c_weigh", c_weigh}, {"c_scale", c_scale}, {"c_classify", c_classify}, {"c_check", c_check},
	{"c_classify2", c_classify2}, {0, 0}};
