struct conn_stats {
	long bytes;
	int requests;
};

extern struct conn_stats stats;
void account(int bytes);
