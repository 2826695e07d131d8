/* config.h: a setting only app/main.c reads. */
#define LIMIT 10
