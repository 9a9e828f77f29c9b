int hello(int);
int main(void) { return hello(1) < 0; }
