__thread long shared_total;
