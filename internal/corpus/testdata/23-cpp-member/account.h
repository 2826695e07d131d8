class Account {
public:
	explicit Account(long balance) : balance_(balance) {}
	bool withdraw(long amount);
	long balance() const { return balance_; }

private:
	long balance_;
};
