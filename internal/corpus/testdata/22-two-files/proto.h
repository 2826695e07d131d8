#define MAX_FIELDS 4

int count_fields(const char *s);
int field_cost(int n);
