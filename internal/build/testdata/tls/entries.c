struct entry {
	const char *name;
	long (*fn)(void);
};
extern long next_request(void);
const struct entry entries[] = {{"next_request", next_request}, {0, 0}};
